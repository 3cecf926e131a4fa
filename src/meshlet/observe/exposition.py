"""Counters, gauges and the Prometheus text format (0.0.4), without prometheus_client.

The sidecar needs little of prometheus_client, but importing it loads its HTTP servers
and clients too (http.server, urllib.request, wsgiref, email: 5 MB of a sidecar's
memory). This module holds what the sidecar uses: labelled counters and gauges, metric
families and one renderer. Families have prometheus_client's shape (``name``, ``type``,
``documentation``, ``samples`` of ``Sample``), so ``prometheus_client.generate_latest``
renders a ``Registry`` too, and ``tests/unit/test_exposition.py`` checks that both give
the same bytes. The control plane keeps prometheus_client (``server_metrics.py``).

Not thread-safe: the sidecar runs one thread.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator, Sequence
from typing import NamedTuple, Protocol

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


class Sample(NamedTuple):
    name: str
    labels: dict[str, str]
    value: float
    timestamp: float | None = None
    exemplar: None = None
    native_histogram: None = None


class Family:
    """One metric family: what a collector yields at scrape time."""

    def __init__(self, name: str, documentation: str, kind: str,
                 labels: Sequence[str] = ()) -> None:
        self.name = name
        self.documentation = documentation
        self.type = kind
        self.labelnames = tuple(labels)
        self.samples: list[Sample] = []

    def __repr__(self) -> str:
        return f"<Family {self.type} {self.name} samples={len(self.samples)}>"

    def sample(self, suffix: str, values: Sequence[str], value: float,
               extra: tuple[tuple[str, str], ...] = ()) -> None:
        labels = dict(zip(self.labelnames, values, strict=True))
        labels.update(extra)
        self.samples.append(Sample(self.name + suffix, labels, value))


class CounterFamily(Family):
    def __init__(self, name: str, documentation: str, labels: Sequence[str] = ()) -> None:
        super().__init__(name.removesuffix("_total"), documentation, "counter", labels)

    def add_metric(self, values: Sequence[str], value: float) -> None:
        self.sample("_total", values, value)


class GaugeFamily(Family):
    def __init__(self, name: str, documentation: str, labels: Sequence[str] = ()) -> None:
        super().__init__(name, documentation, "gauge", labels)

    def add_metric(self, values: Sequence[str], value: float) -> None:
        self.sample("", values, value)


class HistogramFamily(Family):
    def __init__(self, name: str, documentation: str, labels: Sequence[str] = ()) -> None:
        super().__init__(name, documentation, "histogram", labels)

    def add_metric(self, values: Sequence[str], buckets: Sequence[tuple[str, float]],
                   sum_value: float) -> None:
        """``buckets``: (upper bound as text, cumulative count), the last one ``+Inf``."""
        for bound, count in buckets:
            self.sample("_bucket", values, count, (("le", bound),))
        self.sample("_count", values, buckets[-1][1])
        self.sample("_sum", values, sum_value)


class SummaryFamily(Family):
    def __init__(self, name: str, documentation: str, labels: Sequence[str] = ()) -> None:
        super().__init__(name, documentation, "summary", labels)

    def add_metric(self, values: Sequence[str], count: float, sum_value: float) -> None:
        self.sample("_count", values, count)
        self.sample("_sum", values, sum_value)


class Collector(Protocol):
    def collect(self) -> Iterable[Family]: ...


class Registry:
    """Collectors in the order they were registered, as the scrape lists them."""

    def __init__(self) -> None:
        self.collectors: list[Collector] = []

    def __repr__(self) -> str:
        return f"<Registry collectors={len(self.collectors)}>"

    def register(self, collector: Collector) -> None:
        self.collectors.append(collector)

    def collect(self) -> Iterator[Family]:
        for collector in self.collectors:
            yield from collector.collect()


class Value:
    """One labelled child of a counter or a gauge."""

    __slots__ = ("value",)

    def __init__(self) -> None:
        self.value = 0.0

    def inc(self, amount: float = 1.0) -> None:
        self.value += amount

    def dec(self, amount: float = 1.0) -> None:
        self.value -= amount

    def set(self, value: float) -> None:
        self.value = float(value)


class Metric:
    """A counter or a gauge with fixed label names; ``labels(...)`` finds or makes the
    child for one set of values (cache it where it is used per request)."""

    family_type: type[CounterFamily | GaugeFamily] = GaugeFamily

    def __init__(self, name: str, documentation: str, labelnames: Sequence[str] = (),
                 registry: Registry | None = None) -> None:
        self.name = name
        self.documentation = documentation
        self.labelnames = tuple(labelnames)
        self.children: dict[tuple[str, ...], Value] = {}
        if not self.labelnames:
            self.children[()] = Value()
        if registry is not None:
            registry.register(self)

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name} children={len(self.children)}>"

    def labels(self, *values: str) -> Value:
        if len(values) != len(self.labelnames):
            raise ValueError(f"{self.name}: expected labels {self.labelnames}, got {values}")
        key = tuple(str(v) for v in values)
        child = self.children.get(key)
        if child is None:
            child = self.children[key] = Value()
        return child

    def collect(self) -> list[Family]:
        family = self.family_type(self.name, self.documentation, self.labelnames)
        for key, child in self.children.items():
            family.add_metric(key, child.value)
        return [family]


class Counter(Metric):
    family_type = CounterFamily

    def inc(self, amount: float = 1.0) -> None:
        self.children[()].inc(amount)


class Gauge(Metric):
    family_type = GaugeFamily

    def inc(self, amount: float = 1.0) -> None:
        self.children[()].inc(amount)

    def dec(self, amount: float = 1.0) -> None:
        self.children[()].dec(amount)

    def set(self, value: float) -> None:
        self.children[()].set(value)


def go_float(value: float) -> str:
    """A number as Prometheus (and Go) write it: ``1.0``, ``+Inf``, ``1.5e+06``."""
    value = float(value)
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    if math.isnan(value):
        return "NaN"
    text = repr(value)
    dot = text.find(".")
    if value > 0 and dot > 6:  # Go switches to exponents sooner than Python
        mantissa = f"{text[0]}.{text[1:dot]}{text[dot + 1:]}".rstrip("0.")
        return f"{mantissa}e+{dot - 1:02d}"
    return text


def _label_value(value: str) -> str:
    return value.replace("\\", r"\\").replace("\n", r"\n").replace('"', r"\"")


def render(registry: Registry) -> bytes:
    """Every family of ``registry`` in the text format, as ``/metrics`` serves it."""
    out: list[str] = []
    for family in registry.collect():
        name = family.name + ("_total" if family.type == "counter" else "")
        help_text = family.documentation.replace("\\", r"\\").replace("\n", r"\n")
        out.append(f"# HELP {name} {help_text}\n# TYPE {name} {family.type}\n")
        for s in family.samples:
            labels = ",".join(f'{k}="{_label_value(v)}"' for k, v in sorted(s.labels.items()))
            out.append(f"{s.name}{{{labels}}} {go_float(s.value)}\n" if labels
                       else f"{s.name} {go_float(s.value)}\n")
    return "".join(out).encode()

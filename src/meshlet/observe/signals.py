"""Golden signals per service and per edge, from scrapes of every sidecar; pure.

The server's sampler (``api/signal_sampler.py``) scrapes each instance's sidecar in
rounds; ``parse(text, time)`` reads one scrape, keeping every request series apart
(``meshlet_proxy_requests_total`` and the duration histogram, by their labels but
``code``/``le``). ``compute(catalog, before, after)`` compares two rounds:

- a **service** is the inbound view: its instances' ``direction="inbound"`` series with
  ``destination`` = the service (rps, error_rate = 5xx fraction, p50, p99);
- an **edge** source→destination is the callers' outbound view: the outbound series of
  the source's sidecars with ``destination`` = D. The source is the catalog service of
  the instance whose sidecar was scraped (its series' ``source`` label says the same).

Differences are taken series by series (``samples.window``): a series that went down was
reset (a restarted sidecar) and counts from zero, a series that appeared counts from
zero, one that vanished (a departed endpoint) adds nothing. So rates are never negative,
and sums over removed series do not look like resets. An instance missing from the
older round is compared with the oldest round it is in (see ``compute``).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from meshlet.observe.samples import DURATION, REQUESTS, Scrape, Window, merge, text_samples, window

Labels = tuple[tuple[str, str], ...]
SeriesKey = tuple[str, Labels]  # ("requests" | "duration", labels but code / le)


@dataclass(frozen=True)
class Sidecar:
    """One scrape of one sidecar at ``time`` (the sampler's monotonic clock)."""

    time: float
    series: Mapping[SeriesKey, Scrape] = field(default_factory=dict)


def parse(text: str, time: float) -> Sidecar:
    """Every request series of one scrape. Raises ConfigError when ``text`` is not the
    Prometheus text format."""
    requests: dict[Labels, dict[str, float]] = {}
    buckets: dict[Labels, dict[float, float]] = {}
    sums: dict[Labels, float] = {}
    counts: dict[Labels, float] = {}
    for sample in text_samples(text):
        value = float(sample.value)
        if math.isnan(value) or math.isinf(value):  # no measure
            continue
        if sample.name == REQUESTS:
            key = _labels(sample.labels, "code")
            codes = requests.setdefault(key, {})
            code = sample.labels.get("code", "")
            codes[code] = codes.get(code, 0.0) + value
        elif sample.name == DURATION + "_bucket":
            try:
                bound = float(sample.labels.get("le", "nan"))
            except ValueError:
                continue
            if not math.isnan(bound):
                by = buckets.setdefault(_labels(sample.labels, "le"), {})
                by[bound] = by.get(bound, 0.0) + value
        elif sample.name == DURATION + "_sum":
            key = _labels(sample.labels, "")
            sums[key] = sums.get(key, 0.0) + value
        elif sample.name == DURATION + "_count":
            key = _labels(sample.labels, "")
            counts[key] = counts.get(key, 0.0) + value
    series: dict[SeriesKey, Scrape] = {
        ("requests", k): Scrape(time, v) for k, v in requests.items()}
    for k in set(buckets) | set(sums) | set(counts):
        series[("duration", k)] = Scrape(time, {}, tuple(sorted(buckets.get(k, {}).items())),
                                         sums.get(k, 0.0), counts.get(k, 0.0))
    return Sidecar(time, series)


def _labels(labels: Mapping[str, str], without: str) -> Labels:
    return tuple(sorted((k, v) for k, v in labels.items() if k != without))


def windows(before: Sidecar, after: Sidecar) -> list[tuple[SeriesKey, Window]]:
    """Each series of ``after`` over the interval since ``before`` (see the module doc)."""
    return [(key, window(before.series.get(key, Scrape(before.time)), scrape))
            for key, scrape in after.series.items()]


@dataclass(frozen=True)
class Instance:
    """A catalog instance: its id and service."""

    id: str
    service: str


@dataclass(frozen=True)
class Signal:
    """Measures over a window: rate per second and latencies in seconds; None where
    not measured (no two scrapes, or no requests)."""

    rps: float | None = None
    error_rate: float | None = None
    p50: float | None = None
    p99: float | None = None


@dataclass(frozen=True)
class Signals:
    time: float | None
    window: float | None
    services: Mapping[str, tuple[int, int, Signal]]  # service -> instances, scraped, signal
    edges: Mapping[tuple[str, str], Signal]
    unreachable: tuple[str, ...]

    def to_dict(self, wall: float | None) -> dict[str, Any]:
        """The ``GET /v1/signals`` body; ``wall`` the unix time of the newest round."""
        return {
            "time": wall, "window": self.window,
            "services": [{"service": s, "instances": n, "scraped": k, "rps": g.rps,
                          "error_rate": g.error_rate, "p50": g.p50, "p99": g.p99}
                         for s, (n, k, g) in sorted(self.services.items())],
            "edges": [{"source": s, "destination": d, "rps": g.rps,
                       "error_rate": g.error_rate, "p99": g.p99}
                      for (s, d), g in sorted(self.edges.items())],
            "unreachable": list(self.unreachable)}


def _signal(measured: Sequence[Window], quantiles: bool = True) -> Signal:
    if not measured:  # measured, and nothing was served
        return Signal(rps=0.0)
    total = merge(measured)
    return Signal(sum(w.rate for w in measured), total.error_rate,
                  total.quantile(0.5) if quantiles else None, total.quantile(0.99))


def compute(catalog: Sequence[Instance], rounds: Sequence[Mapping[str, Sidecar]]
            ) -> Signals:
    """Signals from ``rounds`` (oldest first; each the scrapes of one round by instance
    id). The newest round is compared, instance by instance, with the oldest round that
    has a scrape of it; an instance not in the newest round is ``unreachable``."""
    newest = rounds[-1] if rounds else {}
    times = [next(iter(r.values())).time for r in rounds if r]
    span = times[-1] - times[0] if len(times) > 1 else None
    inbound: dict[str, list[Window]] = {}
    outbound: dict[tuple[str, str], list[Window]] = {}
    seen_edges: set[tuple[str, str]] = set()
    counts: dict[str, list[int]] = {}
    unreachable = []
    for inst in catalog:
        count = counts.setdefault(inst.service, [0, 0])
        count[0] += 1
        after = newest.get(inst.id)
        if after is None:
            unreachable.append(inst.id)
            continue
        count[1] += 1
        for _, labels in after.series:
            d = dict(labels)
            if d.get("direction") == "outbound" and d.get("destination"):
                seen_edges.add((inst.service, d["destination"]))
        before = next((r[inst.id] for r in rounds[:-1] if inst.id in r), None)
        if before is None or before.time >= after.time:
            continue
        inbound.setdefault(inst.service, [])
        for (_, labels), w in windows(before, after):
            d = dict(labels)
            if d.get("direction") == "inbound" and d.get("destination") == inst.service:
                inbound[inst.service].append(w)
            elif d.get("direction") == "outbound" and d.get("destination"):
                outbound.setdefault((inst.service, d["destination"]), []).append(w)
    services = {s: (n, k, _signal(inbound[s]) if s in inbound else Signal())
                for s, (n, k) in counts.items()}
    edges = {e: _signal(outbound.get(e, []), quantiles=False) if e in outbound else Signal()
             for e in seen_edges}
    return Signals(times[-1] if times else None, span, services, edges,
                   tuple(sorted(unreachable)))

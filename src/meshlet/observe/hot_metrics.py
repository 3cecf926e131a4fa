"""Counters and histograms for the request hot path, cheaper than prometheus_client's.

prometheus_client takes a lock on every increment. The sidecar is single-threaded, so
these keep plain numbers in dicts keyed by label tuples (one dict operation per
update) and turn them into Prometheus families (``exposition.py``) only when
``/metrics`` is scraped.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

from meshlet.observe.exposition import CounterFamily, Family, HistogramFamily, SummaryFamily

Labels = tuple[str, ...]


class HotCounter:
    """Each series is a cell, a one-item list: the hot path may keep a series' cell
    and add to it without looking its labels up (``cell``, ``add``)."""

    def __init__(self, name: str, documentation: str, labelnames: Sequence[str]) -> None:
        self.name = name
        self.documentation = documentation
        self.labelnames = list(labelnames)
        self.values: dict[Labels, list[float]] = {}

    def cell(self, labels: Labels) -> list[float]:
        """The series of ``labels``, made at zero if new; valid until ``remove``."""
        cell = self.values.get(labels)
        if cell is None:
            cell = self.values[labels] = [0.0]
        return cell

    def inc(self, labels: Labels, amount: float = 1.0) -> None:
        self.cell(labels)[0] += amount

    def remove(self, labels: Labels) -> None:
        self.values.pop(labels, None)

    def family(self) -> Family:
        family = CounterFamily(self.name, self.documentation, labels=self.labelnames)
        for labels, cell in sorted(self.values.items()):
            family.add_metric(list(labels), cell[0])
        return family


def add(cell: list[float]) -> None:
    """One more in a counter's cell."""
    cell[0] += 1.0


class HotHistogram:
    """Each series is a row: a count per bucket (the last above every bound), then
    the sum. The hot path may keep a row and observe into it (``row``, ``observe_row``)."""

    def __init__(self, name: str, documentation: str, labelnames: Sequence[str],
                 buckets: Sequence[float]) -> None:
        self.name = name
        self.documentation = documentation
        self.labelnames = list(labelnames)
        self.bounds = list(buckets)
        self.rows: dict[Labels, list[float]] = {}

    def row(self, labels: Labels) -> list[float]:
        """The series of ``labels``, made empty if new; valid until ``remove``."""
        row = self.rows.get(labels)
        if row is None:
            row = self.rows[labels] = [0.0] * (len(self.bounds) + 2)
        return row

    def observe(self, labels: Labels, value: float) -> None:
        observe_row(self.row(labels), self.bounds, value)

    def remove(self, labels: Labels) -> None:
        self.rows.pop(labels, None)

    def family(self) -> Family:
        family = HistogramFamily(self.name, self.documentation, labels=self.labelnames)
        for labels, row in sorted(self.rows.items()):
            cumulative = 0.0
            buckets = []
            for bound, count in zip([*self.bounds, float("inf")], row[:-1], strict=True):
                cumulative += count
                buckets.append((repr(bound) if bound != float("inf") else "+Inf",
                                cumulative))
            family.add_metric(list(labels), buckets, row[-1])
        return family


def observe_row(row: list[float], bounds: list[float], value: float) -> None:
    """Count ``value`` in its bucket (the first bound at or above it) and in the sum."""
    low = 0
    high = len(bounds)
    while low < high:  # bisect_left, a loop the compiled build runs in C
        middle = (low + high) // 2
        bound = bounds[middle]
        if bound < value:
            low = middle + 1
        else:
            high = middle
    row[low] += 1.0
    row[-1] += value


class HotEndpointStats:
    """Per-endpoint attempts by status class, and their total time, in one dict entry:
    exported as a counter (``code`` label) and a summary (count and sum)."""

    CLASSES = ("1xx", "2xx", "3xx", "4xx", "5xx")

    def __init__(self, counter_name: str, summary_name: str, documentation: str,
                 labelnames: Sequence[str]) -> None:
        self.counter_name = counter_name
        self.summary_name = summary_name
        self.documentation = documentation
        self.labelnames = list(labelnames)
        self.values: dict[Labels, list[float]] = {}

    def row(self, labels: Labels) -> list[float]:
        """The series of ``labels`` (per class, then count and sum), made empty if new;
        valid until ``remove``."""
        row = self.values.get(labels)
        if row is None:
            row = self.values[labels] = [0.0] * 7
        return row

    def observe(self, labels: Labels, code: int, seconds: float) -> None:
        observe_attempt(self.row(labels), code, seconds)

    def remove(self, labels: Labels) -> None:
        self.values.pop(labels, None)

    def families(self) -> Iterator[Family]:
        counter = CounterFamily(self.counter_name, self.documentation,
                                      labels=[*self.labelnames, "code"])
        summary = SummaryFamily(self.summary_name, "Time to the end of each attempt's "
                                      "response, per endpoint.", labels=self.labelnames)
        for labels, row in sorted(self.values.items()):
            for i, name in enumerate(self.CLASSES):
                if row[i]:
                    counter.add_metric([*labels, name], row[i])
            summary.add_metric(list(labels), int(row[5]), row[6])
        yield counter
        yield summary


def observe_attempt(row: list[float], code: int, seconds: float) -> None:
    """One attempt answered ``code`` after ``seconds``, in an endpoint's row."""
    row[min(max(code // 100, 1), 5) - 1] += 1.0
    row[5] += 1.0
    row[6] += seconds


class HotCollector:
    def __init__(self, *metrics: HotCounter | HotHistogram | HotEndpointStats) -> None:
        self.metrics = metrics

    def collect(self) -> Iterator[Family]:
        for metric in self.metrics:
            if isinstance(metric, HotEndpointStats):
                yield from metric.families()
            else:
                yield metric.family()

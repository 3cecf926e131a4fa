"""Counters and histograms for the request hot path, cheaper than prometheus_client's.

prometheus_client takes a lock on every increment. The sidecar is single-threaded, so
these keep plain numbers in dicts keyed by label tuples (one dict operation per
update) and turn them into Prometheus families (``exposition.py``) only when
``/metrics`` is scraped.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterator, Sequence

from meshlet.observe.exposition import CounterFamily, Family, HistogramFamily, SummaryFamily

Labels = tuple[str, ...]


class HotCounter:
    def __init__(self, name: str, documentation: str, labelnames: Sequence[str]) -> None:
        self.name = name
        self.documentation = documentation
        self.labelnames = list(labelnames)
        self.values: dict[Labels, float] = {}

    def inc(self, labels: Labels, amount: float = 1.0) -> None:
        values = self.values
        values[labels] = values.get(labels, 0.0) + amount

    def remove(self, labels: Labels) -> None:
        self.values.pop(labels, None)

    def family(self) -> Family:
        family = CounterFamily(self.name, self.documentation, labels=self.labelnames)
        for labels, value in sorted(self.values.items()):
            family.add_metric(list(labels), value)
        return family


class HotHistogram:
    def __init__(self, name: str, documentation: str, labelnames: Sequence[str],
                 buckets: Sequence[float]) -> None:
        self.name = name
        self.documentation = documentation
        self.labelnames = list(labelnames)
        self.bounds = list(buckets)
        self.counts: dict[Labels, list[int]] = {}
        self.sums: dict[Labels, float] = {}

    def observe(self, labels: Labels, value: float) -> None:
        counts = self.counts.get(labels)
        if counts is None:
            counts = self.counts[labels] = [0] * (len(self.bounds) + 1)
            self.sums[labels] = 0.0
        counts[bisect.bisect_left(self.bounds, value)] += 1
        self.sums[labels] += value

    def remove(self, labels: Labels) -> None:
        self.counts.pop(labels, None)
        self.sums.pop(labels, None)

    def family(self) -> Family:
        family = HistogramFamily(self.name, self.documentation, labels=self.labelnames)
        for labels, counts in sorted(self.counts.items()):
            cumulative = 0
            buckets = []
            for bound, count in zip([*self.bounds, float("inf")], counts, strict=True):
                cumulative += count
                buckets.append((repr(bound) if bound != float("inf") else "+Inf",
                                float(cumulative)))
            family.add_metric(list(labels), buckets, self.sums[labels])
        return family


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

    def observe(self, labels: Labels, code: int, seconds: float) -> None:
        row = self.values.get(labels)
        if row is None:
            row = self.values[labels] = [0.0] * 7
        row[min(max(code // 100, 1), 5) - 1] += 1
        row[5] += 1
        row[6] += seconds

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


class HotCollector:
    def __init__(self, *metrics: HotCounter | HotHistogram | HotEndpointStats) -> None:
        self.metrics = metrics

    def collect(self) -> Iterator[Family]:
        for metric in self.metrics:
            if isinstance(metric, HotEndpointStats):
                yield from metric.families()
            else:
                yield metric.family()

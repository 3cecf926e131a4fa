"""What a replica served between two scrapes of its sidecar's metrics; pure.

Every sidecar serves Prometheus text at its instance's ``meta.metrics`` URL (``/metrics``;
the agent registers it, see ``agent/workload.py``). Its inbound series say what the
replica served: ``meshlet_proxy_requests_total{direction="inbound", code}`` and the
histogram ``meshlet_proxy_request_duration_seconds{direction="inbound"}`` (time from a
request's headers arriving at the sidecar to its response completing: the replica's
latency as its callers see it, sidecar included).

``parse(text, time)`` reads one scrape; ``window(before, after)`` takes the difference
of two: requests, 5xx errors, the histogram's bucket deltas and so the latency
quantiles, computed as Prometheus' ``histogram_quantile`` does. ``merge`` adds windows
of several replicas (``sum by (le)``) for service-wide quantiles.

CPU: no series of the sidecar measures its app's CPU, so utilisation by CPU is not
measured (``CPU_NOT_MEASURED`` says so to the user).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample

from meshlet.errors import ConfigError

REQUESTS = "meshlet_proxy_requests_total"
DURATION = "meshlet_proxy_request_duration_seconds"
CPU_NOT_MEASURED = "not measured (no sidecar metric gives the app's CPU)"

Buckets = tuple[tuple[float, float], ...]  # (upper bound, cumulative count), +Inf last


@dataclass(frozen=True)
class Scrape:
    """The inbound counters of one sidecar at ``time`` (the scraper's clock, seconds)."""

    time: float
    requests: Mapping[str, float] = field(default_factory=dict)  # by status code
    buckets: Buckets = ()
    latency_sum: float = 0.0
    latency_count: float = 0.0


@dataclass(frozen=True)
class Window:
    """What was served from ``start`` to ``end``: counts, not rates, so windows add."""

    start: float
    end: float
    requests: float
    errors: float
    buckets: Buckets
    latency_sum: float
    latency_count: float

    @property
    def seconds(self) -> float:
        return self.end - self.start

    @property
    def rate(self) -> float:
        """Requests per second (throughput = requests / time)."""
        return self.requests / self.seconds if self.seconds > 0 else 0.0

    @property
    def error_rate(self) -> float | None:
        """The fraction of requests answered 5xx; None without requests."""
        return self.errors / self.requests if self.requests else None

    @property
    def mean_latency(self) -> float | None:
        """Mean time in the replica (histogram sum / count); None without requests."""
        return self.latency_sum / self.latency_count if self.latency_count else None

    def quantile(self, q: float) -> float | None:
        return histogram_quantile(q, self.buckets)


def text_samples(text: str) -> list[Sample]:
    """Every sample of a scrape; ConfigError when ``text`` is not the Prometheus text
    format (the parser raises several kinds of errors)."""
    try:
        return [s for family in text_string_to_metric_families(text) for s in family.samples]
    except (ValueError, TypeError, IndexError) as exc:
        raise ConfigError(f"not Prometheus text: {exc}") from None


def parse(text: str, time: float, service: str | None = None) -> Scrape:
    """One scrape's inbound series (of ``service`` only, when given: the sidecar labels
    its inbound side with its local service as ``destination``).

    Raises ConfigError when ``text`` is not the Prometheus text format.
    """
    requests: dict[str, float] = {}
    buckets: dict[float, float] = {}
    total = count = 0.0
    for sample in text_samples(text):
        labels = sample.labels
        if labels.get("direction") != "inbound" or \
                (service is not None and labels.get("destination") != service):
            continue
        value = float(sample.value)
        if sample.name == REQUESTS:
            code = labels.get("code", "")
            requests[code] = requests.get(code, 0.0) + value
        elif sample.name == DURATION + "_bucket":
            bound = float(labels.get("le", "nan"))
            if not math.isnan(bound):
                buckets[bound] = buckets.get(bound, 0.0) + value
        elif sample.name == DURATION + "_sum":
            total += value
        elif sample.name == DURATION + "_count":
            count += value
    return Scrape(time, requests, tuple(sorted(buckets.items())), total, count)


def _delta(before: float, after: float) -> float:
    # A counter that went down was reset (the sidecar restarted): count from zero,
    # as Prometheus' rate() does.
    return after - before if after >= before else after


def window(before: Scrape, after: Scrape) -> Window:
    """What was served between two scrapes of the same sidecar."""
    codes = set(before.requests) | set(after.requests)
    by_code = {c: _delta(before.requests.get(c, 0.0), after.requests.get(c, 0.0))
               for c in codes}
    reset = after.latency_count < before.latency_count
    old = {} if reset else dict(before.buckets)
    buckets = tuple((bound, count - old.get(bound, 0.0)) for bound, count in after.buckets)
    return Window(before.time, after.time, sum(by_code.values()),
                  sum(v for c, v in by_code.items() if c.startswith("5")), buckets,
                  after.latency_sum - (0.0 if reset else before.latency_sum),
                  after.latency_count - (0.0 if reset else before.latency_count))


def merge(windows: Iterable[Window]) -> Window:
    """Several windows added: counts summed, buckets summed by upper bound."""
    items = list(windows)
    if not items:
        return Window(0.0, 0.0, 0.0, 0.0, (), 0.0, 0.0)
    buckets: dict[float, float] = {}
    for w in items:
        for bound, count in w.buckets:
            buckets[bound] = buckets.get(bound, 0.0) + count
    return Window(min(w.start for w in items), max(w.end for w in items),
                  sum(w.requests for w in items), sum(w.errors for w in items),
                  tuple(sorted(buckets.items())), sum(w.latency_sum for w in items),
                  sum(w.latency_count for w in items))


def histogram_quantile(q: float, buckets: Buckets) -> float | None:
    """The ``q``-quantile (0 <= q <= 1) of a cumulative histogram, as Prometheus' function:
    find the bucket the rank ``q * count`` falls in and interpolate linearly inside it
    (the lowest bucket starts at 0). A rank in the ``+Inf`` bucket gives the highest
    finite bound. None when there are no observations or no ``+Inf`` bucket."""
    if len(buckets) < 2 or not math.isinf(buckets[-1][0]) or \
            max(count for _, count in buckets) <= 0:
        return None
    # Counts that go down along the bounds (deltas across a reset) are raised to the
    # running maximum, as Prometheus does, so the search below sees a cumulative series.
    monotonic, top = [], 0.0
    for bound, count in buckets:
        top = max(top, count)
        monotonic.append((bound, top))
    rank = q * monotonic[-1][1]
    lower_bound, lower_count = 0.0, 0.0
    for i, (bound, count) in enumerate(monotonic):
        if count >= rank:
            if math.isinf(bound):
                return buckets[-2][0]
            if i == 0 and bound <= 0:
                return bound
            inside = count - lower_count
            if inside <= 0:
                return bound
            return lower_bound + (bound - lower_bound) * (rank - lower_count) / inside
        lower_bound, lower_count = bound, count
    raise AssertionError("the +Inf bucket holds every observation")


@dataclass(frozen=True)
class Point:
    """One interval of a replica's series: its end (seconds from ``origin``), the
    request rate and the p95 latency (None without requests) over the interval."""

    time: float
    rate: float
    p95: float | None


def series(scrapes: Iterable[Scrape], origin: float) -> tuple[Point, ...]:
    """The replica's rate and p95 over each interval between consecutive scrapes."""
    ordered = sorted(scrapes, key=lambda s: s.time)
    return tuple(Point(b.time - origin, w.rate, w.quantile(0.95))
                 for a, b in itertools.pairwise(ordered)
                 for w in (window(a, b),))

"""Two scrapes of a sidecar's metrics: requests, errors and latency quantiles between them."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from meshlet.errors import ConfigError
from meshlet.observe.exposition import render
from meshlet.observe.proxy_metrics import ProxyMetrics
from meshlet.observe.request_labels import duration_labels, request_labels
from meshlet.observe.samples import Scrape, histogram_quantile, merge, parse, series, window

INF = math.inf


def serve(m: ProxyMetrics, n: int, seconds: float, code: str = "200",
          service: str = "echo", direction: str = "inbound") -> None:
    """What the sidecar's listener counts for ``n`` requests that each took ``seconds``."""
    for _ in range(n):
        m.requests.inc(request_labels(direction, "caller", service, "i1", int(code), ""))
        m.duration.observe(duration_labels(direction, "caller", service), seconds)


def scrape(m: ProxyMetrics, time: float, service: str | None = "echo") -> Scrape:
    return parse(render(m.registry).decode(), time, service)


def test_a_window_counts_what_the_sidecar_served_between_two_scrapes() -> None:
    m = ProxyMetrics()
    serve(m, 5, 0.002)
    serve(m, 7, 0.2, direction="outbound", service="db")  # the app's calls: not its load
    before = scrape(m, 10.0)
    serve(m, 90, 0.002)
    serve(m, 10, 0.2, code="503")
    after = scrape(m, 20.0)
    w = window(before, after)
    assert (w.requests, w.errors, w.seconds, w.rate) == (100, 10, 10.0, 10.0)
    assert w.error_rate == pytest.approx(0.1)
    assert w.mean_latency == pytest.approx((90 * 0.002 + 10 * 0.2) / 100)
    # 90 observations in (0.001, 0.0025], 10 in (0.1, 0.25]: the median is inside the
    # first: 0.001 + 0.0015 * (50 / 90); p95 is rank 95, 5 into the 10 of the second.
    assert w.quantile(0.5) == pytest.approx(0.001 + 0.0015 * 50 / 90)
    assert w.quantile(0.95) == pytest.approx(0.1 + 0.15 * 5 / 10)
    assert w.quantile(0.99) == pytest.approx(0.1 + 0.15 * 9 / 10)


def test_other_services_and_directions_are_left_out() -> None:
    m = ProxyMetrics()
    serve(m, 3, 0.01, service="other")
    serve(m, 4, 0.01)
    assert sum(scrape(m, 0.0).requests.values()) == 4
    assert sum(scrape(m, 0.0, service=None).requests.values()) == 7


def test_a_restarted_sidecar_counts_from_zero() -> None:
    m = ProxyMetrics()
    serve(m, 50, 0.01)
    before = scrape(m, 0.0)
    fresh = ProxyMetrics()
    serve(fresh, 8, 0.01)
    w = window(before, scrape(fresh, 5.0))
    assert (w.requests, w.latency_count) == (8, 8)
    assert w.quantile(0.5) == pytest.approx(0.005 + 0.005 * 4 / 8)


def test_no_requests_no_latency() -> None:
    m = ProxyMetrics()
    w = window(scrape(m, 0.0), scrape(m, 1.0))
    assert (w.requests, w.rate, w.error_rate, w.mean_latency, w.quantile(0.95)) == \
        (0, 0.0, None, None, None)


def test_histogram_quantile_as_prometheus() -> None:
    buckets = ((0.1, 10.0), (0.2, 20.0), (INF, 20.0))
    assert histogram_quantile(0.5, buckets) == pytest.approx(0.1)
    assert histogram_quantile(0.25, buckets) == pytest.approx(0.05)  # lowest starts at 0
    assert histogram_quantile(0.75, buckets) == pytest.approx(0.15)
    # A rank in +Inf: the highest finite bound.
    assert histogram_quantile(0.99, ((0.1, 1.0), (INF, 10.0))) == 0.1
    assert histogram_quantile(0.5, ((0.1, 0.0), (INF, 0.0))) is None
    assert histogram_quantile(0.5, ((0.1, 3.0),)) is None  # no +Inf bucket
    # Counts going down along the bounds are made monotonic first.
    assert histogram_quantile(0.5, ((0.1, 4.0), (0.2, 3.0), (INF, 4.0))) == pytest.approx(0.05)


def test_merge_adds_replicas_by_bucket() -> None:
    a, b = ProxyMetrics(), ProxyMetrics()
    start = (scrape(a, 0.0), scrape(b, 0.0))
    serve(a, 10, 0.002)
    serve(b, 10, 0.2)
    both = merge([window(start[0], scrape(a, 4.0)), window(start[1], scrape(b, 4.0))])
    assert (both.requests, both.seconds, both.latency_count) == (20, 4.0, 20)
    assert both.quantile(0.5) == pytest.approx(0.0025)
    assert merge([]).requests == 0


def test_series_gives_rate_and_p95_per_interval() -> None:
    m = ProxyMetrics()
    scrapes = [scrape(m, 100.0)]
    serve(m, 20, 0.004)
    scrapes.append(scrape(m, 102.0))
    scrapes.append(scrape(m, 104.0))
    points = series(reversed(scrapes), origin=100.0)
    assert [(p.time, p.rate) for p in points] == [(2.0, 10.0), (4.0, 0.0)]
    assert points[0].p95 == pytest.approx(0.0025 + 0.0025 * 19 / 20)
    assert points[1].p95 is None


@pytest.mark.parametrize("text", ["meshlet_proxy_requests_total{code= 3\n", "x y z\n"])
def test_text_that_is_not_prometheus_is_a_config_error(text: str) -> None:
    with pytest.raises(ConfigError, match="not Prometheus text"):
        parse(text, 0.0)


@given(st.lists(st.floats(0.0001, 40.0), min_size=1, max_size=200),
       st.sampled_from([0.5, 0.9, 0.95, 0.99]))
def test_quantile_lies_in_the_bucket_of_the_true_quantile(values: list[float],
                                                          q: float) -> None:
    m = ProxyMetrics()
    before = scrape(m, 0.0)
    for v in values:
        m.requests.inc(request_labels("inbound", "caller", "echo", "i1", 200, ""))
        m.duration.observe(duration_labels("inbound", "caller", "echo"), v)
    got = window(before, scrape(m, 1.0)).quantile(q)
    assert got is not None
    bounds = [0.0, *m.duration.bounds]
    ordered = sorted(values)
    true = ordered[max(0, math.ceil(q * len(ordered)) - 1)]
    # The estimate falls in the bucket holding the true quantile, or at its edge.
    upper = next((b for b in bounds if b >= true), bounds[-1])
    lower = max((b for b in bounds if b < true), default=0.0)
    assert lower - 1e-12 <= got <= upper + 1e-12

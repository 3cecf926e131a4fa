"""Capacity planning from replicas' scrapes: the measures and their formulas."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from meshlet.deploy.autoscaler import pod_metrics
from meshlet.deploy.capacity import NO_REQUESTS, Replica, plan
from meshlet.observe.exposition import render
from meshlet.observe.proxy_metrics import ProxyMetrics
from meshlet.observe.request_labels import duration_labels, request_labels
from meshlet.observe.samples import Point, Scrape, parse, window


class Sidecar:
    """A sidecar's metrics, served requests and scrapes, as the scraper would take them."""

    def __init__(self) -> None:
        self.metrics = ProxyMetrics()
        self.scrapes: list[Scrape] = []

    def serve(self, n: int, seconds: float, code: str = "200") -> None:
        for _ in range(n):
            self.metrics.requests.inc(
                request_labels("inbound", "shop", "web", "web-0", int(code), ""))
            self.metrics.duration.observe(duration_labels("inbound", "shop", "web"), seconds)

    def scrape(self, time: float) -> None:
        self.scrapes.append(parse(render(self.metrics.registry).decode(), time, "web"))

    def replica(self, name: str, node: str) -> Replica:
        return Replica(name, node, tuple(self.scrapes))


def three_replicas() -> list[Replica]:
    """web-0 and web-1 on node a, web-2 on b; 10 s at 100, 100 and 200 requests."""
    sidecars = [Sidecar() for _ in range(3)]
    for s in sidecars:
        s.serve(7, 0.004)  # before sampling: not counted
        s.scrape(50.0)
    for second in range(1, 11):
        for s, n in zip(sidecars, (10, 10, 20), strict=True):
            s.serve(n, 0.004)
            s.scrape(50.0 + second)
    return [s.replica(f"web-{i}", node) for i, (s, node)
            in enumerate(zip(sidecars, "aab", strict=True))]


def test_measures_and_their_formulas() -> None:
    result = plan("web", three_replicas(), seconds=10.0, origin=50.0, target_rps=900.0,
                  utilization=0.5, concurrency=2)
    v = result.value
    assert result.total.requests == 400
    assert v("throughput") == 40.0
    assert v("load_per_replica") == pytest.approx(40 / 3)
    assert v("load_per_node") == 20.0
    assert result.nodes == {"a": 20.0, "b": 20.0}
    assert v("mean_latency") == pytest.approx(0.004)
    assert v("in_flight") == pytest.approx(40 * 0.004)             # L = λW
    assert v("capacity_per_replica") == pytest.approx(2 / 0.004)   # μ = C / W = 500
    assert v("utilization") == pytest.approx((40 / 3) / 500)
    assert v("replicas_needed") == 4  # ceil(900 / (500 × 0.5)) = ceil(3.6)
    # Every observation was 4 ms: in (2.5 ms, 5 ms], the quantiles interpolate in it.
    assert v("p50") == pytest.approx(0.0025 + 0.0025 * 0.5)
    assert v("p99") == pytest.approx(0.0025 + 0.0025 * 0.99)
    texts = {f.name: f.text for f in result.formulas}
    assert texts["throughput"] == "λ = 400 / 10.000 s = 40.00 req/s"
    assert texts["load_per_node"] == "40.00 / 2 = 20.00 req/s"
    assert texts["replicas_needed"] == "ceil(900.00 / (500.0 × 0.50)) = 4"
    assert {f.name: f.formula for f in result.formulas}["in_flight"] == "L = λ × W"


def test_replicas_carry_their_rate_peak_and_series() -> None:
    result = plan("web", three_replicas(), seconds=10.0, origin=50.0)
    web2 = result.replicas[2]
    assert (web2.instance, web2.node, web2.window.requests, web2.rate, web2.peak_rate) == \
        ("web-2", "b", 200, 20.0, 20.0)
    assert [p.time for p in web2.series] == [float(t) for t in range(1, 11)]
    # No target: plan for the measured throughput.
    assert result.target_from_measure and result.target_rps == 40.0
    body = result.to_dict()
    assert body["requests"] == 400 and body["cpu"].startswith("not measured")
    assert body["measures"]["replicas_needed"]["value"] == 1  # type: ignore[index]


def test_without_requests_capacity_is_not_measured() -> None:
    idle = Sidecar()
    idle.scrape(0.0)
    idle.scrape(5.0)
    result = plan("web", [idle.replica("web-0", "a")], seconds=5.0)
    assert result.value("throughput") == 0.0
    for name in ("p95", "mean_latency", "in_flight", "capacity_per_replica", "utilization",
                 "replicas_needed"):
        assert result.value(name) is None, name
    assert {f.name: f.text for f in result.formulas}["replicas_needed"] == NO_REQUESTS


def test_a_replica_seen_once_is_left_out() -> None:
    once = Sidecar()
    once.scrape(0.0)
    result = plan("web", [*three_replicas(), once.replica("web-9", "c")], seconds=10.0,
                  origin=50.0)
    assert [r.instance for r in result.replicas] == ["web-0", "web-1", "web-2"]


def test_errors_are_5xx() -> None:
    s = Sidecar()
    s.scrape(0.0)
    s.serve(90, 0.01)
    s.serve(6, 0.01, code="404")
    s.serve(4, 0.01, code="503")
    s.scrape(1.0)
    result = plan("web", [s.replica("web-0", "a")], seconds=1.0)
    assert (result.total.errors, result.total.error_rate) == (4, 0.04)


def test_pod_metrics_feed_the_autoscaler() -> None:
    windows = [window(r.scrapes[0], r.scrapes[-1]) for r in three_replicas()]
    metrics = pod_metrics(windows)
    assert metrics["requests_per_second"] == pytest.approx(40 / 3)
    assert metrics["p95_latency_seconds"] == pytest.approx(0.0025 + 0.0025 * 0.95)
    assert metrics["cpu"] is None
    assert pod_metrics([]) == {"requests_per_second": None, "p95_latency_seconds": None,
                               "cpu": None}


@given(st.floats(0, 1e5), st.floats(1e-4, 10), st.integers(1, 64),
       st.floats(0.05, 1.0), st.integers(1, 50))
def test_replicas_needed_is_the_least_that_keeps_utilisation_at_most_u(
        target: float, w: float, concurrency: int, u: float, n: int) -> None:
    s = Sidecar()
    s.scrape(0.0)
    s.metrics.requests.inc(request_labels("inbound", "shop", "web", "web-0", 200, ""), n)
    for _ in range(n):
        s.metrics.duration.observe(duration_labels("inbound", "shop", "web"), w)
    s.scrape(1.0)
    result = plan("web", [s.replica("web-0", "a")], seconds=1.0, target_rps=target,
                  utilization=u, concurrency=concurrency)
    needed = result.value("replicas_needed")
    mu = result.value("capacity_per_replica")
    assert needed is not None and mu is not None
    # With `needed` replicas the target runs at most at U; one fewer would exceed it.
    assert target / needed <= mu * u * (1 + 1e-9) if needed else target == 0
    if needed > 1:
        assert target / (needed - 1) > mu * u * (1 - 1e-9)
    assert math.isclose(result.value("utilization") or 0.0, n * w / concurrency,
                        rel_tol=1e-6)


def test_plot_is_a_png_even_without_latency(tmp_path: Path) -> None:
    from meshlet.observe.plot import write_png
    path = tmp_path / "idle.png"
    write_png(path, "web", {"web-0": (Point(1.0, 0.0, None), Point(2.0, 0.0, None)),
                            "web-1": (Point(1.0, 5.0, 0.002),)})
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and data[12:16] == b"IHDR"
    write_png(path, "web", {})
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

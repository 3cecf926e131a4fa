"""Golden signals from two rounds of sidecar scrapes, against hand-computed values."""

from __future__ import annotations

import pytest

from meshlet.errors import ConfigError
from meshlet.observe.signals import Instance, Sidecar, compute, parse


def sidecar(time: float, service: str, ok: float, errors: float, fast: float, slow: float,
            upstream: str = "", out: float = 0.0, out_5xx: float = 0.0) -> Sidecar:
    """A sidecar's text: ``ok`` 200s and ``errors`` 503s inbound, of which ``fast`` took
    under 10 ms and ``slow`` 10-100 ms; ``out`` outbound 200s to ``upstream``."""
    n = ok + errors
    text = f"""# TYPE meshlet_proxy_requests_total counter
meshlet_proxy_requests_total{{direction="inbound",destination="{service}",code="200"}} {ok}
meshlet_proxy_requests_total{{direction="inbound",destination="{service}",code="503"}} {errors}
# TYPE meshlet_proxy_request_duration_seconds histogram
meshlet_proxy_request_duration_seconds_bucket{{direction="inbound",destination="{service}",le="0.01"}} {fast}
meshlet_proxy_request_duration_seconds_bucket{{direction="inbound",destination="{service}",le="0.1"}} {fast + slow}
meshlet_proxy_request_duration_seconds_bucket{{direction="inbound",destination="{service}",le="+Inf"}} {n}
meshlet_proxy_request_duration_seconds_sum{{direction="inbound",destination="{service}"}} 1.0
meshlet_proxy_request_duration_seconds_count{{direction="inbound",destination="{service}"}} {n}
"""  # noqa: E501
    if upstream:
        text += (f'meshlet_proxy_requests_total{{direction="outbound",destination="{upstream}"'
                 f',code="200"}} {out}\n'
                 f'meshlet_proxy_requests_total{{direction="outbound",destination="{upstream}"'
                 f',code="502"}} {out_5xx}\n')
    return parse(text, time)


CATALOG = [Instance("web-1", "web"), Instance("web-2", "web"), Instance("api-1", "api")]


def test_rates_error_rate_and_quantiles_by_hand() -> None:
    # Over 10 s: web-1 served 100 (10 of them 503), web-2 served 100 (none failed).
    before = {"web-1": sidecar(0, "web", 0, 0, 0, 0), "web-2": sidecar(0, "web", 0, 0, 0, 0),
              "api-1": sidecar(0, "api", 0, 0, 0, 0)}
    after = {"web-1": sidecar(10, "web", 90, 10, 100, 0, "api", 40, 10),
             "web-2": sidecar(10, "web", 100, 0, 0, 100, "api", 50),
             "api-1": sidecar(10, "api", 100, 0, 100, 0)}
    got = compute(CATALOG, [before, after])
    assert got.window == 10 and got.time == 10
    n, scraped, web = got.services["web"]
    assert (n, scraped) == (2, 2)
    assert web.rps == pytest.approx(20.0)
    assert web.error_rate == pytest.approx(10 / 200)
    # 200 observations, 100 under 10 ms, 100 in 10-100 ms. p50: rank 100 is the top of
    # the first bucket = 0.01; p99: rank 198 is 98/100 of the way through the second.
    assert web.p50 == pytest.approx(0.01)
    assert web.p99 == pytest.approx(0.01 + 0.09 * 98 / 100)
    edge = got.edges[("web", "api")]
    assert edge.rps == pytest.approx(10.0)           # (40 + 10 + 50) / 10 s
    assert edge.error_rate == pytest.approx(10 / 100)
    assert edge.p50 is None
    assert got.services["api"][2].rps == pytest.approx(10.0)
    assert got.unreachable == ()
    body = got.to_dict(1733250000.0)
    assert body["edges"] == [{"source": "web", "destination": "api", "rps": edge.rps,
                              "error_rate": edge.error_rate, "p99": None}]
    assert [s["service"] for s in body["services"]] == ["api", "web"]
    assert set(body) == {"time", "window", "services", "edges", "unreachable"}


def test_a_counter_reset_is_never_a_negative_rate() -> None:
    # web-1 restarted: its counters went from 1000 down to 30 served since.
    before = {"web-1": sidecar(0, "web", 1000, 0, 1000, 0, "api", 500)}
    after = {"web-1": sidecar(10, "web", 30, 0, 30, 0, "api", 20)}
    got = compute(CATALOG[:1], [before, after])
    web = got.services["web"][2]
    assert web.rps == pytest.approx(3.0)
    assert web.p99 is not None and 0 < web.p99 <= 0.01
    assert got.edges[("web", "api")].rps == pytest.approx(2.0)


def test_an_instance_missing_from_a_scrape() -> None:
    # web-2 was not in the older round: it is compared with nothing yet (no rate), and
    # api-1 is missing from the newest: unreachable.
    before = {"web-1": sidecar(0, "web", 0, 0, 0, 0), "api-1": sidecar(0, "api", 0, 0, 0, 0)}
    after = {"web-1": sidecar(10, "web", 50, 0, 50, 0), "web-2": sidecar(10, "web", 70, 0, 70, 0)}
    got = compute(CATALOG, [before, after])
    assert got.services["web"][:2] == (2, 2)
    assert got.services["web"][2].rps == pytest.approx(5.0)
    assert got.services["api"][:2] == (1, 0) and got.services["api"][2].rps is None
    assert got.unreachable == ("api-1",)
    # A third round: web-2 is compared with the oldest round it is in.
    third = {"web-1": sidecar(20, "web", 50, 0, 50, 0), "web-2": sidecar(20, "web", 170, 0, 170, 0),
             "api-1": sidecar(20, "api", 0, 0, 0, 0)}
    got = compute(CATALOG, [before, after, third])
    assert got.window == 20
    assert got.services["web"][2].rps == pytest.approx(50 / 20 + 100 / 10)


def test_one_round_gives_nulls_and_known_edges() -> None:
    got = compute(CATALOG[:1], [{"web-1": sidecar(5, "web", 1, 0, 1, 0, "api", 1)}])
    assert got.window is None and got.services["web"][2].rps is None
    assert got.edges[("web", "api")].rps is None
    assert compute(CATALOG, []).to_dict(None)["services"][0]["rps"] is None


def test_idle_service_measures_zero_and_no_latency() -> None:
    got = compute(CATALOG[2:], [{"api-1": Sidecar(0)}, {"api-1": Sidecar(2)}])
    assert got.services["api"][2].rps == 0.0
    assert got.services["api"][2].error_rate is None and got.services["api"][2].p99 is None


def test_not_prometheus_text() -> None:
    with pytest.raises(ConfigError):
        parse("meshlet_proxy_requests_total{direction=", 0)

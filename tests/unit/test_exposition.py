"""The sidecar's own exposition writes what prometheus_client would, byte for byte."""

from __future__ import annotations

import math

import pytest
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.utils import floatToGoString

from meshlet.observe.exposition import Counter, CounterFamily, Gauge, Registry, go_float, render
from meshlet.observe.proxy_metrics import ProxyMetrics
from meshlet.observe.request_labels import duration_labels, request_labels


def busy_metrics() -> ProxyMetrics:
    """Every sidecar metric with a few series."""
    m = ProxyMetrics()
    for code, reason in ((200, ""), (503, "no_healthy_endpoint")):
        m.requests.inc(request_labels("outbound", "api", "web", "w1", code, reason), 3)
    m.duration.observe(duration_labels("outbound", "api", "web"), 0.003)
    m.duration.observe(duration_labels("outbound", "api", "web"), 42.0)
    m.endpoints.observe(("outbound", "web", "w1"), 200, 0.01)
    m.endpoints.observe(("outbound", "web", "w1"), 502, 0.2)
    m.active_connections.labels("outbound", "web").inc()
    m.active_connections.labels("inbound", "api").inc(2)
    m.active_connections.labels("inbound", "api").dec()
    for counter in (m.connect_errors, m.retries, m.local_replies, m.breaker_overflows):
        counter.labels("outbound", "web", "timeout").inc()
    m.budget_exhausted.labels("outbound", "web").inc()
    m.ejections.labels("outbound", "web").inc()
    m.ejected.labels("outbound", "web").set(1)
    m.config_version.set(7)
    return m


def test_the_sidecar_metrics_render_as_prometheus_client_renders_them() -> None:
    registry = busy_metrics().registry
    assert render(registry) == generate_latest(registry)  # type: ignore[arg-type]
    assert render(ProxyMetrics().registry) == generate_latest(
        ProxyMetrics().registry)  # type: ignore[arg-type]


def test_prometheus_parses_what_is_rendered() -> None:
    text = render(busy_metrics().registry).decode()
    families = {f.name: f for f in text_string_to_metric_families(text)}
    assert families["meshlet_proxy_requests"].type == "counter"
    assert families["meshlet_proxy_request_duration_seconds"].type == "histogram"
    assert families["meshlet_proxy_config_version"].samples[0].value == 7.0
    inf = [s for s in families["meshlet_proxy_request_duration_seconds"].samples
           if s.labels.get("le") == "+Inf"]
    assert inf[0].value == 2.0


@pytest.mark.parametrize("value", [0.0, 1.0, -2.5, 0.1, 123456.0, 1234567.0, 1e300, 5e-324,
                                   math.inf, -math.inf, 7])
def test_numbers_are_written_as_go_writes_them(value: float) -> None:
    assert go_float(value) == floatToGoString(value)
    assert go_float(math.nan) == "NaN"


def test_labels_are_escaped_and_sorted() -> None:
    registry = Registry()
    c = Counter("odd_things", 'Help with a \\ and\na newline.', ["z", "a"], registry)
    c.labels('quote " here', "back\\slash\nnew").inc()
    g = Gauge("plain", "No labels.", registry=registry)
    g.set(3)
    g.inc()
    g.dec(0.5)
    family = CounterFamily("already_total", "Suffix given.")
    family.add_metric([], 1)
    registry.register(type("One", (), {"collect": lambda self: [family]})())
    assert render(registry) == generate_latest(registry)  # type: ignore[arg-type]
    assert b'odd_things_total{a="back\\\\slash\\nnew",z="quote \\" here"} 1.0' in render(registry)
    assert b"plain 3.5" in render(registry)


def test_wrong_label_count_is_a_clear_error() -> None:
    c = Counter("x", "X.", ["a", "b"])
    with pytest.raises(ValueError, match=r"x: expected labels \('a', 'b'\)"):
        c.labels("only-one")

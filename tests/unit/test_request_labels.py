"""The sidecar's request series: a service pair per series, and every label bounded."""

from __future__ import annotations

from meshlet.observe.exposition import render
from meshlet.observe.proxy_metrics import ProxyMetrics
from meshlet.observe.request_labels import (
    MAX_SOURCES,
    OTHER,
    REQUEST_LABELS,
    UNKNOWN,
    duration_labels,
    request_labels,
    response_class,
    source_label,
)


def test_response_classes() -> None:
    assert [response_class(s) for s in (101, 200, 302, 404, 503, 0, 999)] == \
        ["1xx", "2xx", "3xx", "4xx", "5xx", "none", "none"]


def test_a_request_series_names_both_services_the_instance_status_and_reason() -> None:
    labels = request_labels("outbound", "frontend", "catalog", "catalog-1", 504,
                            "connect_timeout")
    assert dict(zip(REQUEST_LABELS, labels, strict=True)) == {
        "direction": "outbound", "source": "frontend", "destination": "catalog",
        "destination_instance": "catalog-1", "code": "504", "response_class": "5xx",
        "reason": "connect_timeout", "grpc_status": ""}
    assert duration_labels("outbound", "frontend", "catalog") == \
        ("outbound", "frontend", "catalog")


def test_a_grpc_calls_status_is_a_label_of_at_most_seventeen_values_and_unknown() -> None:
    def grpc(code: int) -> str:
        labels = request_labels("outbound", "a", "b", "b-1", 200, "", code)
        return dict(zip(REQUEST_LABELS, labels, strict=True))["grpc_status"]

    assert [grpc(c) for c in (-1, 0, 14, 16, 17, 2**31 - 1)] == \
        ["", "0", "14", "16", "unknown", "unknown"]


def test_inbound_callers_are_named_up_to_a_bound_then_counted_as_other() -> None:
    seen: set[str] = set()
    assert source_label("", seen) == UNKNOWN
    names = [source_label(f"svc{i}", seen) for i in range(MAX_SOURCES + 10)]
    assert names[:MAX_SOURCES] == [f"svc{i}" for i in range(MAX_SOURCES)]
    assert set(names[MAX_SOURCES:]) == {OTHER}
    assert len(seen) == MAX_SOURCES
    assert source_label("svc3", seen) == "svc3"  # a caller named before keeps its name


def test_the_series_of_departed_endpoints_are_removed() -> None:
    m = ProxyMetrics()
    for instance in ("web-1", "web-2", ""):
        m.requests.inc(request_labels("outbound", "api", "web", instance, 200, ""))
    m.requests.inc(request_labels("outbound", "api", "db", "db-1", 200, ""))
    m.requests.inc(request_labels("inbound", "shop", "api", "api-1", 200, ""))
    m.forget_endpoints("outbound", "web", {"web-2"})
    assert sorted(k[2:4] for k in m.requests.values) == [
        ("api", "api-1"), ("db", "db-1"), ("web", ""), ("web", "web-2")]


def test_the_exposition_carries_every_label() -> None:
    m = ProxyMetrics()
    m.requests.inc(request_labels("outbound", "frontend", "catalog", "catalog-1", 200, ""))
    text = render(m.registry).decode()
    assert ('meshlet_proxy_requests_total{code="200",destination="catalog",'
            'destination_instance="catalog-1",direction="outbound",grpc_status="",'
            'reason="",response_class="2xx",source="frontend"} 1.0') in text

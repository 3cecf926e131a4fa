"""Trace Context parsing and formatting, span records, the OTLP JSON body and the JSON
access-log line (pure)."""

from __future__ import annotations

import json
import random

import pytest

from meshlet.observe.access_log import access_line, request_path, rfc3339
from meshlet.observe.otlp import otlp_body
from meshlet.proxy.tracing import (
    CLIENT,
    SERVER,
    Tracer,
    format_traceparent,
    new_id,
    parse_traceparent,
    record,
)

TRACE = b"4bf92f3577b34da6a3ce929d0e0e4736"
PARENT = b"00f067aa0ba902b7"
VALID = b"00-" + TRACE + b"-" + PARENT + b"-01"


def test_a_valid_traceparent_is_read() -> None:
    parsed = parse_traceparent(VALID)
    assert parsed is not None
    assert (parsed.trace_id, parsed.parent_id, parsed.flags) == (TRACE, PARENT, 1)
    assert parse_traceparent(VALID[:-2] + b"00").flags == 0  # type: ignore[union-attr]


@pytest.mark.parametrize("value", [
    None, b"", b"garbage", VALID[:-1], VALID + b"0", VALID + b"-extra",
    VALID.upper(), VALID.replace(b"-", b"_", 1),
    b"00-" + b"0" * 32 + b"-" + PARENT + b"-01",       # all-zero trace id
    b"00-" + TRACE + b"-" + b"0" * 16 + b"-01",        # all-zero parent id
    b"ff-" + TRACE + b"-" + PARENT + b"-01",           # version ff is invalid
    b"0g-" + TRACE + b"-" + PARENT + b"-01",
    b"00-" + TRACE[:-1] + b"x-" + PARENT + b"-01",
    b"00-" + TRACE + b"-" + PARENT[:-1] + b"-01",
    b"00-" + TRACE + b"-" + PARENT + b"-0x",
    b"01-" + TRACE + b"-" + PARENT + b"-01x",          # later version: "-" must follow
])
def test_malformed_traceparents_are_absent(value: bytes | None) -> None:
    assert parse_traceparent(value) is None


def test_a_later_version_is_read_as_version_00_and_may_carry_more() -> None:
    later = b"cc-" + TRACE + b"-" + PARENT + b"-01-what-the-future-holds"
    assert parse_traceparent(later) == (TRACE, PARENT, 1)
    assert parse_traceparent(b"cc" + VALID[2:]) == (TRACE, PARENT, 1)


def test_format_and_ids() -> None:
    assert format_traceparent(TRACE, PARENT, True) == VALID
    assert format_traceparent(TRACE, PARENT, False).endswith(b"-00")
    rng = random.Random(7)
    for digits in (16, 32):
        ident = new_id(rng, digits)
        assert len(ident) == digits and ident != b"0" * digits
        assert parse_traceparent(format_traceparent(new_id(rng, 32), new_id(rng, 16), True))


class ZeroFirst(random.Random):
    """Draws 0 once, as a real generator one day will."""

    def __init__(self) -> None:
        super().__init__(1)
        self.first = True

    def getrandbits(self, k: int) -> int:
        if self.first:
            self.first = False
            return 0
        return super().getrandbits(k)


def test_an_id_is_never_all_zeros() -> None:
    assert new_id(ZeroFirst(), 16) != b"0" * 16


def test_tracer_continues_or_starts() -> None:
    tracer = Tracer(1.0, random.Random(1))
    ctx = tracer.begin(VALID, b"a=1", 5)
    assert (ctx.trace_id, ctx.parent_id, ctx.sampled, ctx.tracestate) == (TRACE, PARENT,
                                                                          True, b"a=1")
    assert ctx.header == b"00-" + TRACE + b"-" + ctx.span_id + b"-01"
    fresh = tracer.begin(b"bad", b"a=1", 5)
    assert fresh.parent_id == b"" and fresh.tracestate is None and fresh.sampled
    assert not tracer.begin(VALID[:-2] + b"00", None, 5).sampled  # the caller's choice
    assert not Tracer(0.0, random.Random(1)).begin(None, None, 5).sampled
    half = Tracer(0.5, random.Random(3))
    sampled = sum(half.begin(None, None, 0).sampled for _ in range(1000))
    assert 0 < sampled < 1000


def test_record_and_otlp_body() -> None:
    ctx = Tracer(1.0, random.Random(2)).begin(VALID, b"k=v", 1_000)
    span = record(ctx, SERVER, "GET", "/items", 503, "no_healthy_endpoint", "catalog",
                  "catalog-1", "frontend", 2_500)
    body = json.loads(otlp_body("catalog", "catalog-0", [span]))
    resource = body["resourceSpans"][0]
    assert resource["resource"]["attributes"] == [
        {"key": "service.name", "value": {"stringValue": "catalog"}},
        {"key": "service.instance.id", "value": {"stringValue": "catalog-0"}}]
    (out,) = resource["scopeSpans"][0]["spans"]
    assert out["traceId"] == TRACE.decode() and out["parentSpanId"] == PARENT.decode()
    assert out["spanId"] == ctx.span_id.decode() and out["traceState"] == "k=v"
    assert (out["kind"], out["name"]) == (2, "GET")
    assert (out["startTimeUnixNano"], out["endTimeUnixNano"]) == ("1000", "3500")
    assert out["status"] == {"code": 2, "message": "no_healthy_endpoint"}
    attributes = {a["key"]: a["value"] for a in out["attributes"]}
    assert attributes == {
        "http.request.method": {"stringValue": "GET"}, "url.path": {"stringValue": "/items"},
        "server.address": {"stringValue": "catalog"},
        "http.response.status_code": {"intValue": "503"},
        "meshlet.endpoint": {"stringValue": "catalog-1"},
        "meshlet.reason": {"stringValue": "no_healthy_endpoint"},
        "meshlet.source": {"stringValue": "frontend"}}
    ok = record(Tracer(1.0, random.Random(2)).begin(None, None, 0), CLIENT, "POST", "/", 200,
                "", "catalog", "", "", 1)
    out = json.loads(otlp_body("web", "", [ok]))["resourceSpans"][0]["scopeSpans"][0]["spans"][0]
    assert out["status"] == {"code": 0} and "parentSpanId" not in out and out["kind"] == 3


def test_access_line_is_one_json_object() -> None:
    line = access_line(1733250000.25, "outbound", "web", "catalog", "GET", "/a", 200, "",
                       "catalog-1", 1, 0.0123456, TRACE.decode(), PARENT.decode())
    assert "\n" not in line
    assert json.loads(line) == {
        "ts": "2024-12-03T18:20:00.250Z", "direction": "outbound", "source": "web",
        "destination": "catalog", "method": "GET", "path": "/a", "status": 200,
        "reason": "", "upstream": "catalog-1", "attempts": 1, "duration_ms": 12.346,
        "trace_id": TRACE.decode(), "span_id": PARENT.decode()}
    assert rfc3339(0) == "1970-01-01T00:00:00.000Z"
    assert request_path(b"/a/b?token=secret") == "/a/b"
    assert request_path(b"http://host:80/x?y") == "/x"
    assert request_path(b"http://host") == "/"

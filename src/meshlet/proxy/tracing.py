"""W3C Trace Context for the sidecar, and the spans it records: pure, no I/O.

``parse_traceparent`` reads a ``traceparent`` header (https://www.w3.org/TR/trace-context/
section 3.2): ``version-traceid-parentid-flags``, lower-case hex. Anything malformed, a
trace id or parent id of all zeros, or version ``ff`` is treated as absent, so the
sidecar starts a new trace. A later version (``01``..``fe``) is read as version 00 reads
it (its first four fields; more may follow after a ``-``), as section 3.2.4 asks.

A ``Tracer`` is the sidecar's: ``begin(traceparent, tracestate)`` continues the caller's
trace or starts one (sampled by ``ratio`` with the injected rng) and gives the request's
``SpanContext``; its ``header`` is what the sidecar sends upstream, naming the request's
own span as parent. ``tracestate`` is passed on unchanged, and dropped with a
traceparent that was not valid (section 3.3.1: it belongs to that trace). ``record``
turns a finished request into a ``Span`` tuple for the exporter (``observe/otlp.py``);
unsampled requests record nothing.
"""

from __future__ import annotations

import random
from typing import NamedTuple

from meshlet.observe.span import CLIENT, SERVER, STATUS_ERROR, STATUS_UNSET, Span

__all__ = ["CLIENT", "SERVER", "Span", "SpanContext", "TraceParent", "Tracer",
           "format_traceparent", "new_id", "parse_traceparent", "record"]

HEX = frozenset(b"0123456789abcdef")
ZERO_TRACE = b"0" * 32
ZERO_SPAN = b"0" * 16
MAX_TRACESTATE = 512  # bytes kept for a span's trace_state (the header passes unchanged)


class TraceParent(NamedTuple):
    trace_id: bytes   # 32 lower-case hex digits
    parent_id: bytes  # 16 lower-case hex digits
    flags: int


def _hex(value: bytes, length: int) -> bool:
    return len(value) == length and HEX.issuperset(value)


def parse_traceparent(value: bytes | None) -> TraceParent | None:
    """The caller's trace context, or None when absent or not valid (see the module)."""
    if value is None:
        return None
    value = value.strip(b" \t")
    if len(value) < 55:
        return None
    version = value[:2]
    if not _hex(version, 2) or version == b"ff":
        return None
    if version == b"00" and len(value) != 55:
        return None
    if len(value) > 55 and value[55:56] != b"-":  # a later version may add fields
        return None
    if value[2:3] != b"-" or value[35:36] != b"-" or value[52:53] != b"-":
        return None
    trace_id, parent_id, flags = value[3:35], value[36:52], value[53:55]
    if not (_hex(trace_id, 32) and _hex(parent_id, 16) and _hex(flags, 2)):
        return None
    if trace_id == ZERO_TRACE or parent_id == ZERO_SPAN:
        return None
    return TraceParent(trace_id, parent_id, int(flags, 16))


def format_traceparent(trace_id: bytes, span_id: bytes, sampled: bool) -> bytes:
    """A version-00 ``traceparent`` value."""
    return b"00-%b-%b-%b" % (trace_id, span_id, b"01" if sampled else b"00")


def new_id(rng: random.Random, digits: int) -> bytes:
    """A random id of ``digits`` hex digits, never all zeros."""
    while True:
        value = rng.getrandbits(digits * 4)
        if value:
            return b"%0*x" % (digits, value)


class SpanContext:
    """One request's place in its trace: what it sends upstream and what it records."""

    __slots__ = ("header", "parent_id", "sampled", "span_id", "start_ns", "trace_id",
                 "tracestate")

    def __init__(self, trace_id: bytes, span_id: bytes, parent_id: bytes, sampled: bool,
                 tracestate: bytes | None, start_ns: int) -> None:
        self.trace_id = trace_id
        self.span_id = span_id
        self.parent_id = parent_id  # b"": a new trace, this span is its root
        self.sampled = sampled
        self.tracestate = tracestate
        self.start_ns = start_ns
        self.header = format_traceparent(trace_id, span_id, sampled)

    def __repr__(self) -> str:
        return (f"<SpanContext {self.trace_id.decode()} {self.span_id.decode()} "
                f"parent={self.parent_id.decode() or '-'} sampled={self.sampled}>")


class Tracer:
    """The sidecar's trace decisions; the clock's reading is passed in (``start_ns``)."""

    def __init__(self, ratio: float, rng: random.Random) -> None:
        self.ratio = ratio
        self.rng = rng

    def __repr__(self) -> str:
        return f"<Tracer ratio={self.ratio}>"

    def begin(self, traceparent: bytes | None, tracestate: bytes | None,
              start_ns: int) -> SpanContext:
        span_id = new_id(self.rng, 16)
        caller = parse_traceparent(traceparent)
        if caller is None:
            sampled = self.ratio >= 1.0 or self.rng.random() < self.ratio
            return SpanContext(new_id(self.rng, 32), span_id, b"", sampled, None, start_ns)
        return SpanContext(caller.trace_id, span_id, caller.parent_id, bool(caller.flags & 1),
                           tracestate, start_ns)


def record(ctx: SpanContext, kind: int, method: str, path: str, status: int, reason: str,
           destination: str, endpoint: str, source: str, duration_ns: int) -> Span:
    """The span of a finished request: an error on a 5xx or the sidecar's own failure."""
    error = status >= 500 or bool(reason)
    attributes: list[tuple[str, str | int]] = [
        ("http.request.method", method), ("url.path", path),
        ("server.address", destination)]
    if status:
        attributes.append(("http.response.status_code", status))
    if endpoint:
        attributes.append(("meshlet.endpoint", endpoint))
    if reason:
        attributes.append(("meshlet.reason", reason))
    if source:
        attributes.append(("meshlet.source", source))
    state = ctx.tracestate
    trace_state = state.decode("latin-1") if state and len(state) <= MAX_TRACESTATE else ""
    return Span(ctx.trace_id.decode(), ctx.span_id.decode(), ctx.parent_id.decode(),
                trace_state, method, kind, ctx.start_ns, ctx.start_ns + duration_ns,
                STATUS_ERROR if error else STATUS_UNSET, reason, tuple(attributes))

"""A finished span, as the sidecar records it (``proxy/tracing.py``) and the OTLP
exporter encodes it (``otlp.py``); here so that observe need not import proxy."""

from __future__ import annotations

from typing import NamedTuple

SERVER, CLIENT = 2, 3  # OTLP SpanKind
STATUS_UNSET, STATUS_ERROR = 0, 2  # OTLP Status.code


class Span(NamedTuple):
    """A finished span, as the exporter encodes it (``observe/otlp.py``)."""

    trace_id: str
    span_id: str
    parent_id: str
    trace_state: str
    name: str
    kind: int
    start_ns: int
    end_ns: int
    status: int
    message: str
    attributes: tuple[tuple[str, str | int], ...]

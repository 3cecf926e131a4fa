"""The sidecar's access log: one JSON object a line (pure: the caller passes the time).

Keys, always all of them, in this order: ``ts`` (RFC 3339, UTC, milliseconds),
``direction``, ``source``, ``destination``, ``method``, ``path`` (the request target
without its query, which may hold secrets), ``status``, ``reason`` (the sidecar's own
failure, "" when the upstream answered), ``upstream`` (the endpoint id that answered,
null when none was tried), ``attempts``, ``duration_ms``, ``trace_id`` and ``span_id``
(null when unknown: with tracing off the trace id is the caller's, if it sent a valid
``traceparent``, and there is no span id).
"""

from __future__ import annotations

import json
import time


def rfc3339(unix: float) -> str:
    whole = int(unix)
    millis = int((unix - whole) * 1000)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(whole)) + f".{millis:03d}Z"


def request_path(target: bytes) -> str:
    """The path of a request target (origin or absolute form), query left out."""
    text = target.decode("latin-1")
    if "://" in text:
        text = text.split("://", 1)[1]
        slash = text.find("/")
        text = text[slash:] if slash >= 0 else "/"
    return text.split("?", 1)[0].split("#", 1)[0]


def access_line(unix: float, direction: str, source: str, destination: str, method: str,
                path: str, status: int, reason: str, upstream: str | None, attempts: int,
                seconds: float, trace_id: str | None, span_id: str | None,
                grpc_status: int = -1) -> str:
    """One JSON line; ``grpc_status`` only for a gRPC call (-1: not one)."""
    line: dict[str, object] = {
        "ts": rfc3339(unix), "direction": direction, "source": source,
        "destination": destination, "method": method, "path": path, "status": status,
        "reason": reason, "upstream": upstream, "attempts": attempts,
        "duration_ms": round(seconds * 1000, 3), "trace_id": trace_id, "span_id": span_id}
    if grpc_status >= 0:
        line["grpc_status"] = grpc_status
    return json.dumps(line, separators=(",", ":"), ensure_ascii=True)

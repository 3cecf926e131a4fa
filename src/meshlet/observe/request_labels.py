"""The labels of the sidecar's request series, and what keeps each bounded; pure.

``meshlet_proxy_requests_total`` carries ``direction, source, destination,
destination_instance, code, response_class, reason, grpc_status``; the duration histogram
``direction, source, destination``. Linkerd's ``response_total`` and Envoy's
``upstream_rq`` are the models: a dashboard draws a service pair from one series
without joining tables, and no label takes a value a caller can choose freely.

- ``source``: outbound, the sidecar's own service; inbound, the caller's service from
  its certificate (``UNKNOWN`` without one), the first ``MAX_SOURCES`` distinct callers
  by name and ``OTHER`` after them;
- ``destination``: the upstream (outbound) or the sidecar's own service (inbound);
- ``destination_instance``: outbound, the endpoint that answered the last attempt
  ("" when none was tried); inbound, the sidecar's own instance. Series of endpoints
  that left the cluster are removed (``ProxyMetrics.forget_endpoints``);
- ``code``: the status sent to the client (at most 900 values);
- ``response_class``: ``2xx`` … ``5xx`` (``1xx`` for interim-only, ``none`` for 0);
- ``reason``: "" when the upstream answered, else the sidecar's own reason token
  (``no_healthy_endpoint``, ``connect_timeout``, ``upstream_reset`` …; a fixed set
  written in the code, never read from the wire);
- ``grpc_status``: a gRPC call's status code (0 to 16; ``unknown`` for a value outside
  them), "" for other requests.

No path, method or header label: those are unbounded unless a route names them.
"""

from __future__ import annotations

REQUEST_LABELS = ("direction", "source", "destination", "destination_instance", "code",
                  "response_class", "reason", "grpc_status")
DURATION_LABELS = ("direction", "source", "destination")
UNKNOWN = "unknown"  # an inbound caller without an identity (no mutual TLS)
OTHER = "other"  # inbound callers past MAX_SOURCES
MAX_SOURCES = 64

_CLASSES = {1: "1xx", 2: "2xx", 3: "3xx", 4: "4xx", 5: "5xx"}


def response_class(status: int) -> str:
    return _CLASSES.get(status // 100, "none")


def source_label(caller: str, seen: set[str]) -> str:
    """The ``source`` of an inbound request from ``caller`` ("" without an identity);
    ``seen`` holds the callers named so far and grows to at most MAX_SOURCES."""
    if not caller:
        return UNKNOWN
    if caller in seen:
        return caller
    if len(seen) < MAX_SOURCES:
        seen.add(caller)
        return caller
    return OTHER


MAX_GRPC_STATUS = 16  # UNAUTHENTICATED, the last code gRPC defines


def grpc_label(code: int) -> str:
    """The ``grpc_status`` of a request whose gRPC status is ``code`` (-1: not gRPC)."""
    if code < 0:
        return ""
    return str(code) if code <= MAX_GRPC_STATUS else "unknown"


def request_labels(direction: str, source: str, destination: str, instance: str,
                   status: int, reason: str, grpc_code: int = -1) -> tuple[str, ...]:
    """One request series' label values, in REQUEST_LABELS order."""
    return (direction, source, destination, instance, str(status), response_class(status),
            reason, grpc_label(grpc_code))


def duration_labels(direction: str, source: str, destination: str) -> tuple[str, ...]:
    return (direction, source, destination)

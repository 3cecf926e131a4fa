"""The gRPC status of an error the sidecar makes itself, for a gRPC request; pure.

A gRPC client reads its call's outcome from ``grpc-status``, not from the HTTP status:
an HTTP 503 with a text body is, to it, an opaque protocol failure. So for a request
whose ``content-type`` is ``application/grpc…`` the sidecar answers its own errors as
gRPC does: HTTP 200, a trailers-only response with ``grpc-status``, ``grpc-message`` and
``x-meshlet-error``. The codes follow what each reason means to the caller (Envoy's
choices: a timeout is DEADLINE_EXCEEDED, not the UNAVAILABLE the plain 504 maps to).
"""

from __future__ import annotations

OK, DEADLINE_EXCEEDED, PERMISSION_DENIED, RESOURCE_EXHAUSTED = 0, 4, 7, 8
UNIMPLEMENTED, INTERNAL, UNAVAILABLE = 12, 13, 14

BY_REASON = {
    "request_timeout": DEADLINE_EXCEEDED,
    "per_try_timeout": DEADLINE_EXCEEDED,
    "intention_denied": PERMISSION_DENIED,
    "rate_limited": RESOURCE_EXHAUSTED,
    "head_too_large": RESOURCE_EXHAUSTED,
    "no_route": UNIMPLEMENTED,
    "upgrade_unsupported": UNIMPLEMENTED,
    "bad_request": INTERNAL,
    "partition_key_missing": INTERNAL,
    "partition_no_match": INTERNAL,
}


def is_grpc(content_type: bytes) -> bool:
    return content_type.split(b";")[0].strip().lower().startswith(b"application/grpc")


def status_for(reason: str) -> int:
    """The gRPC status of a sidecar-made error: UNAVAILABLE (retry elsewhere may work)
    unless the reason says otherwise."""
    return BY_REASON.get(reason, UNAVAILABLE)


def grpc_message(text: str) -> bytes:
    """``grpc-message``'s percent-encoding (the gRPC HTTP/2 spec): printable ASCII but
    ``%`` stays, every other byte of the UTF-8 (and ``%``) becomes ``%XX``."""
    return b"".join(bytes([b]) if 0x20 <= b <= 0x7E and b != 0x25 else b"%%%02X" % b
                    for b in text.encode())


TIMEOUT_UNITS = {b"H": 3600.0, b"M": 60.0, b"S": 1.0, b"m": 1e-3, b"u": 1e-6, b"n": 1e-9}


def grpc_timeout(value: bytes) -> float | None:
    """Seconds of a ``grpc-timeout`` header (at most 8 digits and a unit: H M S m u n),
    or None when it is not one."""
    digits, unit = value[:-1], value[-1:]
    if not 1 <= len(digits) <= 8 or not digits.isdigit() or unit not in TIMEOUT_UNITS:
        return None
    return int(digits) * TIMEOUT_UNITS[unit]

"""HTTP/1.1 header handling for the relay: what a header means for framing and
forwarding, noticed once while parsing, and heads rebuilt for the next hop. Both
connections' write placeholder lives here too, out of their import cycle."""

from __future__ import annotations

HOP_BY_HOP = frozenset({b"connection", b"keep-alive", b"proxy-connection", b"te",
                        b"trailer", b"transfer-encoding", b"upgrade"})

# What the connection noticed while collecting headers, so nothing scans them again.
CHUNKED, HAS_HOST, HAS_HOP_BY_HOP, HAS_LENGTH, HAS_ERROR, HAS_TRACE = 1, 2, 4, 8, 16, 32
NOTABLE_LENGTHS = frozenset({2, 4, 7, 10, 11, 14, 15, 16, 17})
TRACEPARENT, TRACESTATE = b"traceparent", b"tracestate"


def header_flags(name: bytes, value: bytes) -> int:
    """The flags one header sets (0 for the common case, after one length check)."""
    if len(name) not in NOTABLE_LENGTHS:
        return 0
    lower = name.lower()
    if lower == b"host":
        return HAS_HOST
    if lower == b"content-length":
        return HAS_LENGTH
    if lower == b"x-meshlet-error":
        return HAS_ERROR
    if lower == TRACEPARENT:
        return HAS_TRACE
    if lower in HOP_BY_HOP:
        if lower == b"transfer-encoding" and b"chunked" in value.lower():
            return HAS_HOP_BY_HOP | CHUNKED
        return HAS_HOP_BY_HOP
    return 0


def chunk(data: bytes) -> bytes:
    return b"%x\r\n%b\r\n" % (len(data), data)


def header_value(headers: list[tuple[bytes, bytes]], wanted: bytes) -> bytes | None:
    for name, value in headers:
        if name.lower() == wanted:
            return value
    return None


def raw_headers(data: bytes) -> tuple[list[tuple[bytes, bytes]], int]:
    """Headers and flags of a response head at the start of ``data`` (the rare path:
    a relayed 5xx whose ``x-meshlet-error`` decides on a retry)."""
    head = data.split(b"\r\n\r\n", 1)[0].split(b"\r\n")[1:]
    headers = []
    flags = 0
    for line in head:
        name, _, value = line.partition(b":")
        headers.append((name.strip(), value.strip()))
        flags |= header_flags(name.strip(), value.strip())
    return headers, flags


def delimited_by_close(data: bytes, status: int) -> bool:
    """Whether the response whose head starts ``data`` ends its body by closing: only
    its Transfer-Encoding or Content-Length header could say otherwise."""
    if status in (204, 304):
        return False
    return not raw_headers(data)[1] & (CHUNKED | HAS_LENGTH)


def connection_listed(headers: list[tuple[bytes, bytes]]) -> frozenset[bytes]:
    """The header names a ``Connection`` header lists: options of this hop alone, which
    a proxy removes before forwarding (RFC 9110, 7.6.1), as it removes ``Connection``."""
    listed: set[bytes] = set()
    for name, value in headers:
        if name.lower() == b"connection":
            for token in value.split(b","):  # a loop: cpdef functions take no generators
                listed.add(token.strip().lower())
    listed.discard(b"")
    return frozenset(listed)


def forward_headers(parts: list[bytes], headers: list[tuple[bytes, bytes]],
                    drop: frozenset[bytes] = frozenset(), flags: int = HAS_HOP_BY_HOP) -> None:
    if not drop and not flags & HAS_HOP_BY_HOP:
        for name, value in headers:
            parts += (name, b": ", value, b"\r\n")
        return
    if flags & HAS_HOP_BY_HOP:
        drop = drop | connection_listed(headers)
    for name, value in headers:
        lower = name.lower()
        if lower not in HOP_BY_HOP and lower not in drop:
            parts += (name, b": ", value, b"\r\n")


def unconnected(data: bytes) -> None:
    """A connection's ``send`` until its transport is there (``transport.write`` after)."""
    raise RuntimeError("a write before the connection was made")

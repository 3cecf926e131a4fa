"""Recognise the API's hottest request, ``PUT /v1/kv/KEY[?cas=N]``, in raw bytes.

The server's fast lane (``fast_lane.py``) answers these without aiohttp. It takes
only the plain form, whose meaning cannot differ between the two paths: HTTP/1.1, a
``Content-Length`` body, a key of unreserved characters with no empty or dot segment
(which URL normalisation would change), and no query but ``cas`` as decimal digits.
Everything else, including malformed input, goes to aiohttp, which answers or refuses
it as it does any request.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from meshlet.http_limits import NAME_CHARS, VALUE_CONTROLS

MAX_HEAD: Final = 16 * 1024
MAX_BODY: Final = 4 * 1024 * 1024  # the API's client_max_size
PREFIX: Final = b"PUT /v1/kv/"
SUFFIX: Final = b" HTTP/1.1"
KEY_BYTES: Final = frozenset(
    b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-._~/:@")
# Headers that change how the message is framed or answered: the fast lane leaves
# requests carrying them to aiohttp.
FRAMING: Final = frozenset({b"transfer-encoding", b"expect", b"upgrade"})
# Headers that carry the caller's ACL token (``api/access.py`` reads the same two).
TOKEN_HEADERS: Final = frozenset({b"x-meshlet-token", b"authorization"})


class Incomplete:
    """More bytes are needed to tell."""


INCOMPLETE: Final = Incomplete()


@dataclass(frozen=True, slots=True)
class KvPut:
    key: str
    cas: int | None
    body_start: int  # offset of the body in the buffer
    end: int  # offset just past the body
    keep_alive: bool
    token: str | None = None  # the ACL token's secret the request carries


@dataclass(frozen=True, slots=True)
class PlainHead:
    """A head in the plain form both fast paths take, read from raw bytes."""

    target: bytes  # the request line's target, between the method and the version
    length: int | None  # Content-Length, if given
    keep_alive: bool
    token: str | None
    body_start: int  # offset just past the head


def read_head(buffer: bytes | bytearray, prefix: bytes) -> PlainHead | Incomplete | None:
    """The head at the start of ``buffer`` if its request line starts with ``prefix``
    and ends with `` HTTP/1.1`` and its headers are plain (no framing header, a token
    given once and readable); ``INCOMPLETE`` if that cannot be told yet; ``None`` if
    aiohttp should have it. The body is not looked at."""
    if not buffer.startswith(prefix):
        return INCOMPLETE if prefix.startswith(buffer[:len(prefix)]) else None
    head_end = buffer.find(b"\r\n\r\n", 0, MAX_HEAD)
    if head_end < 0:
        return INCOMPLETE if len(buffer) < MAX_HEAD else None
    head = bytes(buffer[:head_end])
    crlf = head.count(b"\r\n")
    if head.count(b"\n") != crlf or head.count(b"\r") != crlf:
        return None  # a CR or LF outside a CRLF: aiohttp refuses it
    lines = head.split(b"\r\n")
    if not lines[0].endswith(SUFFIX):
        return None
    length: int | None = None
    keep_alive = True
    credentials: dict[bytes, bytes] = {}
    connection: bytes | None = None
    for line in lines[1:]:
        name, colon, value = line.partition(b":")
        if not colon or not name or name.translate(None, NAME_CHARS) \
                or len(value.translate(None, VALUE_CONTROLS)) != len(value):
            return None
        lower = name.lower()
        value = value.strip(b" \t")
        if lower == b"content-length":
            if length is not None or not value.isdigit():
                return None
            length = int(value)
        elif lower == b"connection":
            if connection is not None:  # sent twice: aiohttp judges it
                return None
            connection = value
            keep_alive = b"close" not in (t.strip(b" \t").lower() for t in value.split(b","))
        elif lower in TOKEN_HEADERS:
            if lower in credentials:  # sent twice: aiohttp judges it
                return None
            credentials[lower] = value
        elif lower in FRAMING:
            return None
    token = token_of(credentials.get(b"x-meshlet-token"), credentials.get(b"authorization"))
    if token is None and credentials:
        return None
    return PlainHead(lines[0][len(prefix):-len(SUFFIX)], length, keep_alive, token,
                     head_end + 4)


def parse(buffer: bytes | bytearray) -> KvPut | Incomplete | None:
    """The request at the start of ``buffer`` if it is a plain KV put; ``INCOMPLETE``
    if that cannot be told yet; ``None`` if aiohttp should have it."""
    head = read_head(buffer, PREFIX)
    if not isinstance(head, PlainHead):
        return head
    target = request_target(head.target)
    if target is None:
        return None
    key, cas = target
    length = head.length
    if length is None or length > MAX_BODY:
        return None
    if len(buffer) < head.body_start + length:
        return INCOMPLETE
    return KvPut(key, cas, head.body_start, head.body_start + length, head.keep_alive,
                 head.token)


def token_of(header: bytes | None, authorization: bytes | None) -> str | None:
    """The token's secret from ``X-Meshlet-Token`` or ``Authorization: Bearer``
    (the first wins, as in ``api/access.py``), if plain ASCII."""
    if header is None and authorization is not None:
        scheme, _, rest = authorization.partition(b" ")
        header = rest.strip() if scheme.lower() == b"bearer" else None
    if not header or not header.isascii():
        return None
    return header.decode()


def request_target(target: bytes) -> tuple[str, int | None] | None:
    """(key, cas) from the target of ``PUT /v1/kv/KEY[?cas=N] HTTP/1.1``, or None if
    not plain."""
    path, question, query = target.partition(b"?")
    cas: int | None = None
    if question:
        if not query.startswith(b"cas=") or not query[4:].isdigit() or len(query) > 24:
            return None
        cas = int(query[4:])
    if not path or not KEY_BYTES.issuperset(path):
        return None
    if any(segment in (b"", b".", b"..") for segment in path.split(b"/")):
        return None
    return path.decode(), cas

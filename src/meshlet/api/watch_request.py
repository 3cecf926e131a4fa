"""Recognise the API's most numerous request in raw bytes: the blocking watch of a
service's instances, ``GET /v1/services/NAME/instances?index=N[&wait=D][&passing]``,
which every agent holds open (``agent.py``).

The server's fast lane (``fast_lane.py``) parks these without aiohttp, so that one
change answers thousands of them with one encoding (``watch_hub.py``). It takes only
the plain form, whose meaning cannot differ between the two paths: HTTP/1.1, no body,
a name of the characters service names have, and a query of ``index`` (decimal digits,
required: without it nothing blocks), ``wait`` (a duration) and ``passing`` (bare, or
``1`` or ``true``), each at most once. Everything else, including malformed input, goes
to aiohttp, which answers or refuses it as it does any request.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from meshlet.api.kv_put_request import INCOMPLETE, Incomplete, PlainHead, read_head
from meshlet.durations import parse_duration
from meshlet.errors import ConfigError

PREFIX: Final = b"GET /v1/services/"
SUFFIX: Final = b"/instances"
NAME_BYTES: Final = frozenset(
    b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-._")
MAX_NAME: Final = 128
WAIT_BYTES: Final = frozenset(b"0123456789.smhu")
PASSING: Final = {b"": True, b"1": True, b"true": True}
MAX_WAIT: Final = 600.0  # the routes' bound (routes.MAX_WAIT)
DEFAULT_WAIT: Final = 300.0


@dataclass(frozen=True, slots=True)
class WatchGet:
    service: str
    index: int
    wait: float  # seconds, bounded as the route bounds it
    passing: bool
    end: int  # offset just past the request
    keep_alive: bool
    token: str | None = None


def parse(buffer: bytes | bytearray) -> WatchGet | Incomplete | None:
    """The request at the start of ``buffer`` if it is a plain watch of a service's
    instances; ``INCOMPLETE`` if that cannot be told yet; ``None`` if aiohttp should
    have it."""
    head = read_head(buffer, PREFIX)
    if not isinstance(head, PlainHead):
        return head
    if head.length not in (None, 0):
        return None
    path, question, query = head.target.partition(b"?")
    if not question or not path.endswith(SUFFIX):
        return None
    name = path[:-len(SUFFIX)]
    if not name or len(name) > MAX_NAME or not NAME_BYTES.issuperset(name) \
            or name[:1] in b".-_":
        return None
    fields: dict[bytes, bytes] = {}
    for pair in query.split(b"&"):
        key, _, value = pair.partition(b"=")
        if key in fields or key not in (b"index", b"wait", b"passing"):
            return None
        fields[key] = value
    index, wait = fields.get(b"index"), fields.get(b"wait")
    if index is None or not index.isdigit() or len(index) > 20:
        return None
    passing = b"passing" in fields
    if passing and fields[b"passing"] not in PASSING:
        return None
    seconds = DEFAULT_WAIT
    if wait is not None:
        if not wait or not WAIT_BYTES.issuperset(wait):
            return None
        try:
            seconds = parse_duration(wait.decode(), "wait")
        except ConfigError:
            return None  # aiohttp answers the error
    if not 0 <= seconds < float("inf"):
        return None
    return WatchGet(name.decode(), int(index), min(seconds, MAX_WAIT), passing,
                    head.body_start, head.keep_alive, head.token)


__all__ = ["INCOMPLETE", "WatchGet", "parse"]

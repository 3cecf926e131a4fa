"""What one client can make the API server hold: heads, time, connections.

Every connection starts in the fast lane (``fast_lane.py``), which reads each request
head whole before it serves it or hands the connection to aiohttp. Here:

- ``head_verdict`` judges the bytes of a head as they arrive (pure): wait for more, go
  on, or a ``Refusal`` — a target over 8 KiB (414), a head over 64 KiB or 100 headers
  (431), two Host headers, HTTP/0.9 or a CR or LF not part of a CRLF (400), CONNECT or
  an Upgrade (501);
- ``ConnectionGuard`` keeps the connections that owe the server bytes, oldest first:
  those awaiting a head (connected, or answered and idle) and those whose head came
  but not yet all of its body, the fast lane's and aiohttp's alike (``HandedOver``,
  kept by ``ConnectionGuard.middleware``). One that has no whole head ``head_timeout``
  seconds after it connected or was last answered is closed (408 if a head had begun
  on the fast lane), one that has no whole body ``head_timeout`` seconds after its head
  is answered 408 ``body_timeout`` and closed; past ``max_connections`` (all of them,
  aiohttp's included) a new connection closes the one that has waited longest, or is
  refused with 503 if none is waiting (every other one is being answered);
- for the later requests of the connections aiohttp was handed, ``aiohttp_limits``
  bounds what its parser reads (200 headers of at most 64 KiB, an 8 KiB request line;
  past them, and for two Host headers, it answers 400 itself), the middleware
  ``head_limits_middleware`` judges each head by the same rules as the fast lane, and
  aiohttp's keep-alive timeout is the head timeout (it, too, counts from the
  connection's start or its last response).

The numbers are ``meshlet.http_limits``'s, shared with the sidecar.
"""

from __future__ import annotations

import asyncio
import contextlib
import resource
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, Final, Protocol

from aiohttp import web

from meshlet.errors import MeshletError
from meshlet.http_limits import (
    API_HEAD_TIMEOUT,
    BAD_REQUEST,
    HEAD_TIMEOUT_CODE,
    HEAD_TOO_LARGE,
    MAX_HEAD_BYTES,
    MAX_HEADERS,
    MAX_URL_BYTES,
    UPGRADE_UNSUPPORTED,
    URL_TOO_LONG,
)

__all__ = ["BODY_TIMEOUT_CODE", "HEAD_TIMEOUT_CODE", "WAIT", "BodyTimeout", "ConnectionGuard",
           "HandedOver", "Refusal", "aiohttp_limits", "connection_budget",
           "head_limits_middleware", "head_verdict", "judge"]

WAIT: Final = -1  # head_verdict: the head is not complete yet
LONGEST_METHOD_AND_VERSION: Final = len(b"OPTIONS  HTTP/1.1\r\n")
SWEEP_INTERVAL: Final = 0.25  # seconds between looks for a late head
MAX_CONNECTIONS: Final = 16384  # each agent holds a watch per service it calls
# aiohttp's parser reads up to this many headers (past it, it answers 400 itself), so
# that the middleware can answer 101 and more with 431 as the fast lane does.
AIOHTTP_MAX_HEADERS: Final = 2 * MAX_HEADERS
# Half the descriptors is kept for the log, snapshots, Raft peers and forwarded
# requests (a follower opens one to the leader for each request it forwards).
DESCRIPTOR_SHARE: Final = 2


BODY_TIMEOUT_CODE: Final = "body_timeout"

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class BodyTimeout(MeshletError):
    """A request's body did not arrive whole in time (aiohttp's handlers read it)."""

    code = BODY_TIMEOUT_CODE
    http_status = 408


@dataclass(frozen=True, slots=True)
class Refusal:
    status: int
    code: str
    message: str


def head_verdict(buffer: bytes | bytearray) -> int | Refusal:
    """The offset just past the head at the start of ``buffer`` if it is complete and
    acceptable, ``WAIT`` if more bytes are needed, else why it is refused. A request
    line that is not HTTP at all is left to aiohttp, which answers it 400 itself."""
    line_end = buffer.find(b"\n", 0, MAX_URL_BYTES + LONGEST_METHOD_AND_VERSION)
    if line_end < 0:
        if len(buffer) >= MAX_URL_BYTES + LONGEST_METHOD_AND_VERSION:
            return Refusal(414, URL_TOO_LONG, f"a request target over {MAX_URL_BYTES} bytes")
        return WAIT
    parts = bytes(buffer[:line_end]).rstrip(b"\r").split(b" ")
    if len(parts) == 2:
        return Refusal(400, BAD_REQUEST, "HTTP/0.9 is not served")
    method, target = (parts[0], parts[1]) if len(parts) == 3 else (b"", b"")
    end = buffer.find(b"\r\n\r\n", line_end - 1, MAX_HEAD_BYTES + 4)
    if end < 0:
        refusal = judge(method, len(target), 1, [], 0)  # the target and method now
        if refusal is not None:
            return refusal
        if len(buffer) >= MAX_HEAD_BYTES + 4:
            return Refusal(431, HEAD_TOO_LARGE, f"a request head over {MAX_HEAD_BYTES} bytes")
        if buffer.count(b"\n", line_end + 1, MAX_HEAD_BYTES) > MAX_HEADERS:
            return Refusal(431, HEAD_TOO_LARGE, f"more than {MAX_HEADERS} headers")
        return WAIT
    head = bytes(buffer[:end + 4])
    crlf = head.count(b"\r\n")
    if head.count(b"\n") != crlf or head.count(b"\r") != crlf:
        # aiohttp's parser refuses these; read as one line here they could hide a header.
        return Refusal(400, BAD_REQUEST, "a CR or LF in the request head that is not a CRLF")
    lines = head[line_end + 1:end].split(b"\r\n") if end > line_end else []
    headers = [(name.strip(), value.strip()) for name, _, value in
               (line.partition(b":") for line in lines[:MAX_HEADERS + 1])]
    return judge(method, len(target), 1, headers, end) or end + 4


def judge(method: bytes | str, target_size: int, major: int,
          headers: Sequence[tuple[bytes, bytes]], head_size: int) -> Refusal | None:
    """Why a parsed request head is refused, or None (the rules of the module doc)."""
    if major < 1:
        return Refusal(400, BAD_REQUEST, "HTTP/0.9 is not served")
    if target_size > MAX_URL_BYTES:
        return Refusal(414, URL_TOO_LONG, f"a request target over {MAX_URL_BYTES} bytes")
    if head_size > MAX_HEAD_BYTES:
        return Refusal(431, HEAD_TOO_LARGE, f"a request head over {MAX_HEAD_BYTES} bytes")
    if len(headers) > MAX_HEADERS:
        return Refusal(431, HEAD_TOO_LARGE, f"more than {MAX_HEADERS} headers")
    if method in (b"CONNECT", "CONNECT"):
        return Refusal(501, UPGRADE_UNSUPPORTED, "CONNECT is not served")
    hosts = 0
    upgrade = connection_upgrade = False
    for name, value in headers:
        if len(name) not in (4, 7, 10):  # host, upgrade, connection
            continue
        lower = name.lower()
        if lower == b"host":
            hosts += 1
        elif lower == b"upgrade":
            upgrade = True
        elif lower == b"connection":
            connection_upgrade = connection_upgrade or b"upgrade" in value.lower()
    if hosts > 1:
        return Refusal(400, BAD_REQUEST, "two Host headers")
    if upgrade and connection_upgrade:
        return Refusal(501, UPGRADE_UNSUPPORTED, "protocol upgrades are not served")
    return None


@web.middleware
async def head_limits_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """The same rules for the requests aiohttp parsed itself (a connection's later
    requests): aiohttp's parser bounds their size (``aiohttp_limits``), this judges them."""
    headers = request.raw_headers
    refusal = judge(request.method, len(request.raw_path), request.version.major, headers,
                    sum(len(name) + len(value) + 4 for name, value in headers))
    if refusal is None:
        return await handler(request)
    body = {"error": {"code": refusal.code, "message": refusal.message, "field": None}}
    response = web.json_response(body, status=refusal.status)
    response.force_close()  # what follows a refused head is not read as a request
    return response


def connection_budget(descriptors: int | None = None) -> int:
    """How many client connections to hold at most: half the descriptor limit
    (``RLIMIT_NOFILE``'s soft value unless given), never more than MAX_CONNECTIONS."""
    if descriptors is None:
        descriptors = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
        if descriptors == resource.RLIM_INFINITY:
            return MAX_CONNECTIONS
    return max(8, min(MAX_CONNECTIONS, descriptors // DESCRIPTOR_SHARE))


def aiohttp_limits(head_timeout: float = API_HEAD_TIMEOUT) -> dict[str, Any]:
    """aiohttp's own bounds (``web.AppRunner`` arguments), for handed-over connections."""
    return {"keepalive_timeout": head_timeout, "max_headers": AIOHTTP_MAX_HEADERS,
            "max_line_size": MAX_URL_BYTES + LONGEST_METHOD_AND_VERSION,
            "max_field_size": MAX_HEAD_BYTES}


class Waiting(Protocol):
    """A connection the guard can time out or close to make room."""

    @property
    def closed(self) -> bool: ...

    def timed_out(self) -> None: ...

    def close(self) -> None: ...


class Guarded(Waiting, Protocol):
    """A connection the guard admits (a FastLane)."""

    def refuse_connection(self) -> None: ...


class HandedOver:
    """A connection aiohttp serves, as the guard sees it: awaiting a head (``body`` None)
    or the rest of a body (``body``, the request's stream). Equal to any other for the
    same aiohttp protocol, so each request's replaces the last in ``waiting``."""

    __slots__ = ("body", "late", "protocol")

    def __init__(self, protocol: Any, body: Any = None) -> None:
        self.protocol = protocol  # aiohttp's RequestHandler
        self.body = body  # aiohttp's StreamReader
        self.late = False

    def __hash__(self) -> int:
        return id(self.protocol)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, HandedOver) and other.protocol is self.protocol

    def __repr__(self) -> str:
        return f"<HandedOver {'body' if self.body is not None else 'head'}>"

    @property
    def closed(self) -> bool:
        transport = self.protocol.transport
        return transport is None or bool(transport.is_closing())

    def timed_out(self) -> None:
        """A late body fails the handler's read (answered 408, then closed); a late
        head closes the connection."""
        if self.body is not None and not self.body.is_eof():
            self.late = True
            self.body.set_exception(
                BodyTimeout("the request body did not arrive whole in time"))
        else:
            self.close()

    def close(self) -> None:
        self.protocol.force_close()


class ConnectionGuard:
    """The connections that owe a head or a body, by deadline, and the count of every
    open connection. ``start`` runs the sweeper; ``stop`` ends it."""

    def __init__(self, head_timeout: float = API_HEAD_TIMEOUT, max_connections: int = 0,
                 clock: Callable[[], float] | None = None) -> None:
        self.head_timeout = head_timeout
        self.max_connections = max_connections or connection_budget()
        self.clock = clock or time.monotonic
        self.open: set[Guarded] = set()  # held by the fast lane
        self.waiting: dict[Waiting, float] = {}  # owing bytes → deadline, oldest first
        self.others: Callable[[], int] = lambda: 0  # connections aiohttp holds
        self.timed_out = 0
        self.evicted = 0
        self.refused = 0
        self.sweeper: asyncio.Task[None] | None = None

    def __repr__(self) -> str:
        return (f"<ConnectionGuard open={len(self.open)} waiting={len(self.waiting)} "
                f"max={self.max_connections} timed_out={self.timed_out} "
                f"evicted={self.evicted} refused={self.refused}>")

    def start(self, others: Callable[[], int]) -> None:
        self.others = others
        self.sweeper = asyncio.get_running_loop().create_task(self.sweep())

    async def stop(self) -> None:
        if self.sweeper is not None:
            self.sweeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.sweeper

    def admit(self, conn: Guarded) -> bool:
        """A new connection: make room for it if need be; False if it is refused."""
        if len(self.open) + self.others() >= self.max_connections and not self.make_room():
            self.refused += 1
            conn.refuse_connection()
            return False
        self.open.add(conn)
        self.await_head(conn)
        return True

    def make_room(self) -> bool:
        """Close the connection that has waited longest; False if none waits."""
        while self.waiting:
            oldest = next(iter(self.waiting))
            self.waiting.pop(oldest)
            if oldest.closed:  # aiohttp closed it: the count no longer has it
                continue
            self.evicted += 1
            self.open.discard(oldest)
            oldest.close()
            return True
        return False

    def await_head(self, conn: Waiting) -> None:
        """``conn`` waits for a head from now on (connected, or answered)."""
        self.waiting.pop(conn, None)  # to the end: the dict stays in deadline order
        self.waiting[conn] = self.head_deadline()

    def head_deadline(self) -> float:
        """When a head that may begin now is due."""
        return self.clock() + self.head_timeout

    # A head came and its body is still on its way: the same time again for it.
    await_body = await_head

    def busy(self, conn: Waiting) -> None:
        """``conn``'s request came whole: it is being answered."""
        self.waiting.pop(conn, None)

    def leave(self, conn: Guarded) -> None:
        """``conn`` closed, or went to aiohttp."""
        self.open.discard(conn)
        self.waiting.pop(conn, None)

    def expire(self, now: float) -> None:
        """Time out the connections whose head or body is late (the oldest come first)."""
        late = []
        for conn, deadline in self.waiting.items():
            if deadline > now:
                break
            late.append(conn)
        for conn in late:
            self.waiting.pop(conn, None)
            self.timed_out += 1
            conn.timed_out()

    async def sweep(self) -> None:
        while True:
            await asyncio.sleep(SWEEP_INTERVAL)
            self.expire(self.clock())

    @web.middleware
    async def middleware(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        """The requests aiohttp serves: their body is on a deadline from their head, and
        their connection waits for a head again once answered."""
        protocol = request.protocol
        conn = HandedOver(protocol)
        self.busy(conn)
        body = request.content
        if not body.is_eof():
            conn.body = body
            self.await_body(conn)
            body.on_eof(lambda: self.body_arrived(conn))
        try:
            response = await handler(request)
        finally:
            conn.body = None
            idle = HandedOver(protocol)
            if request.keep_alive and not idle.closed:  # else aiohttp closes it now
                self.await_head(idle)
        if conn.late:
            response.force_close()  # the rest of its body is not read as a request
        return response

    def body_arrived(self, conn: HandedOver) -> None:
        if conn.body is not None:
            conn.body = None
            self.busy(conn)

"""The API's front door: KV puts and service watches on the leader answered directly,
the rest by aiohttp.

A write costs the leader about as much in aiohttp's request machinery (request and
response objects, routing, middlewares) as in Raft itself, and the leader's event
loop is what limits write throughput. So each connection starts here. While its
requests are plain ``PUT /v1/kv/KEY`` (``kv_put_request.py``) and this server leads,
they are parsed from the raw bytes, their token checked (``Api.guard``, as the routes
check it), proposed through ``Api.propose`` and answered with the same status, body
and headers aiohttp would give. Plain blocking watches of a service's instances
(``watch_request.py``) are checked the same way and parked in ``watch_hub.py``, which
answers every watch of a service with one encoding. The first request that is
anything else (another route, a follower's write to forward, an unusual form) hands
the connection, with every byte not yet answered, to aiohttp's protocol for good.
Each head is read whole and judged first, and connections are bounded in number and
in the time their heads and bodies take (``connection_limits.py``).
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from array import array
from collections.abc import Awaitable, Callable
from email.utils import formatdate
from http import HTTPStatus
from typing import TYPE_CHECKING, Any

from meshlet.api import connection_limits, kv_put_request, watch_request
from meshlet.api.connection_limits import WAIT, ConnectionGuard, HandedOver, Refusal
from meshlet.api.error_body import error_body
from meshlet.api.kv_put_request import INCOMPLETE, Incomplete, KvPut
from meshlet.api.parallel_send import Senders
from meshlet.api.watch_request import WatchGet
from meshlet.errors import MeshletError, NotLeader
from meshlet.http_limits import MAX_HEAD_BYTES
from meshlet.state.commands import KVPut

if TYPE_CHECKING:
    from meshlet.api.watch_hub import WatchHub

log = logging.getLogger(__name__)
READ_HIGH = 1024 * 1024  # stop reading while this much waits behind a request
# Behind a parked watch, which may wait minutes, no more than one whole head: the
# server holds thousands of them.
WATCH_READ_HIGH = MAX_HEAD_BYTES + 4


class FastLaneStats:
    """Requests answered here, and connections handed to aiohttp."""

    def __init__(self) -> None:
        self.served = 0
        self.handed_over = 0
        self.connections: set[FastLane] = set()
        self.guard = ConnectionGuard()
        self.hub: WatchHub | None = None  # set by the server once it runs
        self.senders = Senders()


class HttpDate:
    """The ``Date`` header, formatted once a second."""

    def __init__(self) -> None:
        self.second = 0
        self.value = b""

    def now(self) -> bytes:
        second = int(time.time())
        if second != self.second:
            self.second = second
            self.value = formatdate(second, usegmt=True).encode()
        return self.value


DATE = HttpDate()


def response(status: int, body: bytes, headers: dict[str, str], keep_alive: bool) -> bytes:
    head = [b"HTTP/1.1 %d %b\r\nContent-Type: application/json; charset=utf-8\r\n"
            b"Content-Length: %d\r\nDate: %b\r\n"
            % (status, HTTPStatus(status).phrase.encode(), len(body), DATE.now())]
    for name, value in headers.items():
        head.append(b"%b: %b\r\n" % (name.encode(), value.encode()))
    if not keep_alive:
        head.append(b"Connection: close\r\n")
    head.append(b"\r\n")
    head.append(body)
    return b"".join(head)


def answer_watches(batch: list[tuple[FastLane, bytes, bool]], deadline: float,
                   stats: FastLaneStats) -> None:
    """The hub's answers to the watches one change woke: (lane, answer, keep-alive).
    This runs once per watcher, so the common case is a tight loop: a plain
    connection with nothing queued gets its answer from ``Senders`` straight onto
    its socket, all of them at once. A connection to close, with bytes already
    behind its watch or queued to it, or with TLS, takes the longer way."""
    direct: dict[bytes, list[FastLane]] = {}  # by answer: the same bytes for them all
    for lane, answer, keep_alive in batch:
        try:
            # A closing transport may be about to close its socket: only the transport
            # knows, so it takes those (and drops the write if it is too late).
            transport = lane.transport
            if not keep_alive or lane.fd < 0 or lane.buffer or lane.eof or lane.closed \
                    or transport is None or transport.is_closing() \
                    or transport.get_write_buffer_size():
                lane.answer_watch(answer, keep_alive, deadline)
                continue
        except Exception:  # one connection's failure must not cost the others theirs
            log.exception("answering a watch")
            lane.close()
            continue
        lanes = direct.get(answer)
        if lanes is None:
            lanes = direct[answer] = []
        lanes.append(lane)
    for answer, lanes in direct.items():
        sent = stats.senders.send(array("i", [lane.fd for lane in lanes]), answer)
        finish_direct(lanes, answer, sent, deadline, stats)


def finish_direct(lanes: list[FastLane], answer: bytes, sent: array[int], deadline: float,
                  stats: FastLaneStats) -> None:
    """After the sends: an answer the kernel did not take whole (its buffer full, or
    an error) goes to the transport from where it stopped, which queues the rest or
    meets the error and closes, as for any write."""
    waiting = stats.guard.waiting
    whole = len(answer)
    served = 0
    for lane, count in zip(lanes, sent, strict=True):
        lane.watching = None
        if count != whole:
            try:
                lane.transport.write(answer[max(count, 0):])  # type: ignore[union-attr]
            except Exception:
                log.exception("answering a watch")
                lane.close()
                continue
        waiting[lane] = deadline  # busy() took it out when its watch came
        served += 1
    stats.served += served


class FastLane(asyncio.Protocol):
    def __init__(self, api: Any, fallback: Callable[[], asyncio.Protocol],
                 stats: FastLaneStats) -> None:
        self.api = api
        self.fallback = fallback
        self.stats = stats
        self.transport: asyncio.Transport | None = None
        self.buffer = bytearray()  # received, not yet answered
        self.busy: asyncio.Task[None] | None = None
        self.closed = False
        self.paused = False
        self.eof = False  # the client has sent all it will
        self.in_body = False  # a head came, not yet all of its body
        self.watching: str | None = None  # the service of the watch parked in the hub
        self.write_paused = False  # the client reads its answers slower than they come
        # The socket, for the hub's answers written straight to it; -1 with TLS (the
        # bytes must go through the transport's encryption) or none to be had.
        self.fd = -1

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        sock = transport.get_extra_info("socket")
        if sock is not None and transport.get_extra_info("sslcontext") is None:
            self.fd = sock.fileno()
        if self.stats.guard.admit(self):
            self.stats.connections.add(self)

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.stats.connections.discard(self)
        self.stats.guard.leave(self)
        if self.busy is not None:
            self.busy.cancel()
        if self.watching is not None and self.stats.hub is not None:
            self.stats.hub.forget(self, self.watching)
            self.watching = None

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        if self.busy is None and self.watching is None:
            self.next_request()
        elif self.watching is not None:
            # Reading goes on behind a parked watch, or a client gone would not be
            # seen; past one head's worth, the watch is answered now (as if its wait
            # ran out, which a watcher must expect anyway) and what follows is read.
            if len(self.buffer) > WATCH_READ_HIGH and self.stats.hub is not None:
                self.stats.hub.expire(self, self.watching)
        elif not self.paused and len(self.buffer) > READ_HIGH:
            self.pause()

    def pause(self) -> None:
        if not self.paused:
            self.paused = True
            self.transport.pause_reading()  # type: ignore[union-attr]

    def pause_writing(self) -> None:
        """The transport holds more than its high-water mark: read no more requests
        until the client has taken its answers."""
        self.write_paused = True
        self.pause()

    def resume_writing(self) -> None:
        self.write_paused = False
        if self.closed:
            return
        if self.busy is None and self.watching is None:
            self.next_request()
        elif self.paused and len(self.buffer) <= READ_HIGH:
            self.paused = False
            self.transport.resume_reading()  # type: ignore[union-attr]

    def eof_received(self) -> bool | None:
        self.eof = True
        if self.watching is not None:
            # A FIN on a parked watch reads as the client gone, as aiohttp reads it: a
            # closed client must not hold its slot for the whole wait.
            return False
        return self.busy is not None  # answer what was asked, then close

    def next_request(self) -> None:
        if self.write_paused:
            return  # resume_writing comes back here
        if self.paused:
            self.paused = False
            self.transport.resume_reading()  # type: ignore[union-attr]
        if not self.buffer:
            if self.eof:
                self.close()
            return
        verdict = connection_limits.head_verdict(self.buffer)
        if verdict == WAIT:
            if self.eof:  # the rest will never come
                self.close()
            return
        if isinstance(verdict, Refusal):
            self.refuse(verdict)
            return
        request: KvPut | WatchGet | Incomplete | None = kv_put_request.parse(self.buffer)
        if request is None and self.stats.hub is not None:
            request = watch_request.parse(self.buffer)
        if request is INCOMPLETE:
            if self.eof:  # the rest will never come
                self.close()
            elif not self.in_body:  # the body's deadline runs from its head
                self.in_body = True
                self.stats.guard.await_body(self)
            return
        self.in_body = False
        self.stats.guard.busy(self)
        if not isinstance(request, KvPut | WatchGet) or not self.api.node.is_leader:
            self.hand_over(bytes(self.buffer))
            return
        raw = bytes(self.buffer[:request.end])
        del self.buffer[:request.end]
        serve = self.serve(request, raw) if isinstance(request, KvPut) else \
            self.serve_watch(request, raw)
        self.busy = asyncio.get_running_loop().create_task(serve)

    async def serve(self, request: KvPut, raw: bytes) -> None:
        command = KVPut(request.key, raw[request.body_start:request.end], request.cas)

        async def put() -> Any:
            # The same check aiohttp's routes make (api/access.py), from a cache.
            self.api.guard.authorize(request.token, "kv", request.key, "write")
            return await self.api.propose(command)
        done, result = await self.leading(raw, put(), f"PUT /v1/kv/{request.key}",
                                          request.keep_alive)
        if done:
            headers = {"X-Meshlet-Index": str(result.index), **self.api.node.read_headers()}
            self.answer(response(200, json.dumps(result.value).encode(), headers,
                                 request.keep_alive), request.keep_alive)

    async def serve_watch(self, request: WatchGet, raw: bytes) -> None:
        async def check() -> None:
            # The route's check (Need("service", name="name")) and its read barrier.
            self.api.guard.authorize(request.token, "service", request.service, "read")
            await self.api.node.read_barrier("default", None)
        done, _ = await self.leading(raw, check(), f"a watch of {request.service}",
                                     request.keep_alive)
        if not done or self.closed or self.stats.hub is None:
            return
        if self.eof:  # the client left while its watch was checked
            self.close()
            return
        self.watching = request.service
        self.stats.hub.watch(self, request)

    async def leading(self, raw: bytes, work: Awaitable[Any], what: str,
                      keep_alive: bool) -> tuple[bool, Any]:
        """(True, ``work``'s result); or False once the request is dealt with: handed
        to aiohttp with ``raw`` if this server does not lead (it certainly did not
        commit: aiohttp runs it again and forwards it), or answered with its error."""
        try:
            result = await work
        except NotLeader:
            self.busy = None
            self.hand_over(raw + bytes(self.buffer))
            return False, None
        except Exception as exc:
            if not isinstance(exc, MeshletError):
                log.exception("unhandled error in %s", what)
            self.busy = None
            status, body = error_body(exc)
            self.answer(response(status, json.dumps(body).encode(), {}, keep_alive),
                        keep_alive)
            return False, None
        self.busy = None
        return True, result

    def answer_watch(self, answer: bytes, keep_alive: bool, deadline: float) -> None:
        """The hub's answer to the parked watch; ``deadline``: the next head's."""
        self.watching = None
        self.answer(answer, keep_alive, deadline)

    def answer(self, answer: bytes, keep_alive: bool, deadline: float | None = None) -> None:
        """Write a whole response; then close, or read the next request (due by
        ``deadline``, if the caller has read the clock already)."""
        if self.closed:
            return
        self.stats.served += 1
        self.transport.write(answer)  # type: ignore[union-attr]
        if not keep_alive:
            self.close()
            return
        if deadline is None:
            self.stats.guard.await_head(self)
        else:
            self.stats.guard.waiting[self] = deadline  # busy() took it out when it came
        self.next_request()

    def hand_over(self, pending: bytes) -> None:
        """aiohttp's protocol takes this connection from here on."""
        transport = self.transport
        if transport is None or self.closed:
            return
        self.stats.connections.discard(self)
        self.stats.guard.leave(self)
        self.stats.handed_over += 1
        self.buffer = bytearray()
        if self.paused:
            self.paused = False
            transport.resume_reading()
        protocol = self.fallback()
        transport.set_protocol(protocol)
        protocol.connection_made(transport)
        self.stats.guard.await_head(HandedOver(protocol))  # until its middleware runs
        if pending:
            protocol.data_received(pending)

    def refuse(self, refusal: Refusal) -> None:
        """Answer a head ``head_verdict`` refused, and close: what follows it cannot be
        told apart from the rest of the connection."""
        self.buffer = bytearray()
        self.answer_and_close(refusal.status, refusal.code, refusal.message)

    def timed_out(self) -> None:
        """The guard's verdict: no whole head in time (408 if one had begun), or no
        whole body in time from its head (408)."""
        if self.in_body:
            self.answer_and_close(408, connection_limits.BODY_TIMEOUT_CODE,
                                  f"no whole request body in {self.stats.guard.head_timeout:g} s")
        elif self.buffer:
            self.answer_and_close(408, connection_limits.HEAD_TIMEOUT_CODE,
                                  f"no whole request head in {self.stats.guard.head_timeout:g} s")
        else:
            self.close()

    def refuse_connection(self) -> None:
        """One connection too many, with none waiting that could make room."""
        self.answer_and_close(503, "too_many_connections",
                              f"more than {self.stats.guard.max_connections} connections")

    def answer_and_close(self, status: int, code: str, message: str) -> None:
        if self.closed or self.transport is None:
            return
        body = json.dumps({"error": {"code": code, "message": message, "field": None}})
        self.transport.write(response(status, body.encode(), {}, keep_alive=False))
        self.close()

    def close(self) -> None:
        if not self.closed and self.transport is not None:
            self.closed = True
            self.transport.close()

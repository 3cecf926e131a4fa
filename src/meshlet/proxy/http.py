"""HTTP/1.1 forwarding with asyncio Protocols and httptools.

A downstream connection parses requests and queues one ``Exchange`` per request; the
head of the queue is in flight, later (pipelined) ones wait with their bytes buffered.
An exchange picks an endpoint, takes a pooled upstream connection or opens one, and
streams the request; the upstream connection parses the response and streams it back.
Bodies are re-framed as they pass: Content-Length is kept, chunked is re-chunked, a
response delimited by close is chunked for HTTP/1.1 clients. Errors the sidecar makes
itself carry their reason in ``x-meshlet-error``.

Retries go to another endpoint when nothing reached an application, or when the method
is idempotent: connect failures, a reset of a reused (stale) pooled connection, a reset
of an idempotent request before any response byte, a peer sidecar's
``local_app_refused`` (its app was not listening), and a peer sidecar's
``upstream_reset`` for an idempotent request. The request must still be in the replay
buffer (at most 64 KiB).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from typing import Any

import httptools

from meshlet.proxy.config import Endpoint
from meshlet.proxy.listener import ListenerState
from meshlet.proxy.pool import EndpointPool

HOP_BY_HOP = frozenset({b"connection", b"keep-alive", b"proxy-connection", b"te",
                        b"trailer", b"transfer-encoding", b"upgrade"})
ERROR_HEADER = b"x-meshlet-error"
LOCAL_APP_REFUSED = b"local_app_refused"
IDEMPOTENT = frozenset({b"GET", b"HEAD", b"OPTIONS", b"PUT", b"DELETE", b"TRACE"})
REPLAY_LIMIT = 64 * 1024
BUFFER_HIGH = 1024 * 1024

ERROR_STATUS = {"connect_timeout": 504, "upstream_reset": 502, "request_timeout": 504}

log = logging.getLogger(__name__)

FRAMING_NONE, FRAMING_RAW, FRAMING_CHUNKED, FRAMING_UNTIL_CLOSE = range(4)


def chunk(data: bytes) -> bytes:
    return b"%x\r\n%b\r\n" % (len(data), data)


def is_chunked(headers: list[tuple[bytes, bytes]]) -> bool:
    for name, value in headers:
        if name.lower() == b"transfer-encoding" and b"chunked" in value.lower():
            return True
    return False


def has_header(headers: list[tuple[bytes, bytes]], wanted: bytes) -> bool:
    return any(name.lower() == wanted for name, _ in headers)


def header_value(headers: list[tuple[bytes, bytes]], wanted: bytes) -> bytes | None:
    for name, value in headers:
        if name.lower() == wanted:
            return value
    return None


def forward_headers(parts: list[bytes], headers: list[tuple[bytes, bytes]]) -> None:
    for name, value in headers:
        if name.lower() not in HOP_BY_HOP:
            parts += (name, b": ", value, b"\r\n")


class DownstreamHttp(asyncio.Protocol):
    """One client connection to a listener."""

    def __init__(self, listener: ListenerState) -> None:
        self.listener = listener
        self.loop = listener.loop
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpRequestParser(self)
        self.queue: deque[Exchange] = deque()
        self.parsing: Exchange | None = None
        self.url = b""
        self.headers: list[tuple[bytes, bytes]] = []
        self.closed = False
        self.half_closed = False
        self.read_pauses: set[str] = set()
        self.write_paused = False

    def __repr__(self) -> str:
        return f"<DownstreamHttp queue={len(self.queue)} closed={self.closed}>"

    # -- asyncio.Protocol -------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.listener.connections.add(self)
        self.listener.active_gauge.inc()

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.listener.connections.discard(self)
        self.listener.active_gauge.dec()
        for ex in list(self.queue):
            ex.abort()
        self.queue.clear()

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self.fail_parse(501, "upgrade_unsupported")
        except httptools.HttpParserCallbackError:
            log.exception("sidecar bug while handling a request; closing the connection")
            self.close()
        except httptools.HttpParserError:
            self.fail_parse(400, "bad_request")

    def eof_received(self) -> bool | None:
        if self.queue:
            self.half_closed = True
            return True
        return None

    def pause_writing(self) -> None:
        self.write_paused = True
        if self.queue and self.queue[0].upstream is not None:
            self.queue[0].upstream.set_reading(False)

    def resume_writing(self) -> None:
        self.write_paused = False
        if self.queue and self.queue[0].upstream is not None:
            self.queue[0].upstream.set_reading(True)

    # -- httptools callbacks ----------------------------------------------------------

    def on_message_begin(self) -> None:
        self.url = b""
        self.headers = []

    def on_url(self, url: bytes) -> None:
        self.url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers.append((name, value))

    def on_headers_complete(self) -> None:
        p = self.parser
        ex = Exchange(self, p.get_method(), self.url, self.headers, p.should_keep_alive(),
                      p.get_http_version())
        self.parsing = ex
        self.queue.append(ex)
        self.listener.active_requests += 1
        if len(self.queue) == 1:
            ex.start()
        else:
            self.pause_reading("pipelined")

    def on_body(self, body: bytes) -> None:
        if self.parsing is not None:
            self.parsing.request_body(body)

    def on_message_complete(self) -> None:
        if self.parsing is not None:
            self.parsing.request_done()
            self.parsing = None

    # -- called by exchanges ----------------------------------------------------------

    def pause_reading(self, reason: str) -> None:
        if not self.read_pauses and self.transport is not None:
            self.transport.pause_reading()
        self.read_pauses.add(reason)

    def resume_reading(self, reason: str) -> None:
        if reason in self.read_pauses:
            self.read_pauses.discard(reason)
            if not self.read_pauses and self.transport is not None and not self.closed:
                self.transport.resume_reading()

    def write(self, data: bytes) -> None:
        if not self.closed:
            self.transport.write(data)  # type: ignore[union-attr]

    @property
    def keep_open(self) -> bool:
        return not (self.listener.draining or self.half_closed or self.closed)

    def exchange_finished(self, ex: Exchange) -> None:
        self.listener.active_requests -= 1
        if self.queue and self.queue[0] is ex:
            self.queue.popleft()
        if self.closed:
            return
        if not ex.keep_alive or not self.keep_open:
            self.close()
            return
        if self.queue:
            self.queue[0].start()
        if len(self.queue) <= 1:
            self.resume_reading("pipelined")

    def fail_parse(self, status: int, reason: str) -> None:
        if self.queue:
            self.close()
            return
        body = reason.encode() + b"\n"
        self.write(b"HTTP/1.1 %d %b\r\ncontent-length: %d\r\nx-meshlet-error: %b\r\n"
                   b"connection: close\r\n\r\n%b" % (status, reason.encode(), len(body),
                                                     reason.encode(), body))
        self.listener.count(self.listener.metrics.local_replies, reason)
        self.close()

    def drain(self) -> None:
        if not self.queue:
            self.close()

    def close(self) -> None:
        if not self.closed and self.transport is not None:
            self.closed = True
            self.transport.close()


class UpstreamHttp(asyncio.Protocol):
    """One pooled connection to an upstream endpoint."""

    def __init__(self) -> None:
        self.parser = httptools.HttpResponseParser(self)
        self.transport: asyncio.Transport | None = None
        self.exchange: Exchange | None = None
        self.pool: EndpointPool | None = None
        self.closed = False
        self.reused = False
        self.reason = b""
        self.headers: list[tuple[bytes, bytes]] = []
        self.reset_parser = False

    def __repr__(self) -> str:
        return f"<UpstreamHttp busy={self.exchange is not None} closed={self.closed}>"

    @property
    def usable(self) -> bool:
        return not self.closed and self.exchange is None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        ex = self.exchange
        if ex is not None:
            self.exchange = None
            ex.upstream_lost(self)
        elif self.pool is not None:
            self.pool.discard(self)

    def data_received(self, data: bytes) -> None:
        ex = self.exchange
        if ex is None:
            self.close()  # unsolicited bytes on an idle connection: not safe to reuse
            return
        ex.got_response_bytes = True
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError:
            self.close()
            if self.exchange is ex:
                self.exchange = None
                ex.upstream_lost(self)
            return
        if self.reset_parser:
            self.reset_parser = False
            self.parser = httptools.HttpResponseParser(self)

    def pause_writing(self) -> None:
        if self.exchange is not None:
            self.exchange.down.pause_reading("upstream_buffer")

    def resume_writing(self) -> None:
        if self.exchange is not None:
            self.exchange.down.resume_reading("upstream_buffer")

    def set_reading(self, on: bool) -> None:
        if self.transport is not None and not self.closed:
            if on:
                self.transport.resume_reading()
            else:
                self.transport.pause_reading()

    def close(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.close()

    # -- httptools callbacks ----------------------------------------------------------

    def on_message_begin(self) -> None:
        self.reason = b""
        self.headers = []

    def on_status(self, reason: bytes) -> None:
        self.reason += reason

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers.append((name, value))

    def on_headers_complete(self) -> None:
        if self.exchange is not None:
            self.exchange.response_head(self.parser.get_status_code(), self.reason,
                                        self.headers)

    def on_body(self, body: bytes) -> None:
        if self.exchange is not None:
            self.exchange.response_body(body)

    def on_message_complete(self) -> None:
        if self.exchange is not None:
            self.exchange.response_done(self.parser.should_keep_alive())


class Exchange:
    """One request/response through the sidecar."""

    __slots__ = (
        "body_done",
        "chunked",
        "cluster",
        "connect_task",
        "discarding",
        "down",
        "endpoint",
        "finished",
        "framing",
        "got_response_bytes",
        "interim",
        "is_head",
        "keep_alive",
        "last_error",
        "listener",
        "loop",
        "method",
        "pending",
        "pending_size",
        "response_started",
        "sent",
        "sent_size",
        "start_time",
        "status",
        "timer",
        "tried",
        "upstream",
        "version",
    )

    def __init__(self, down: DownstreamHttp, method: bytes, url: bytes,
                 headers: list[tuple[bytes, bytes]], keep_alive: bool, version: str) -> None:
        self.down = down
        self.listener = down.listener
        self.loop = down.loop
        self.method = method
        self.keep_alive = keep_alive
        self.version = version
        self.chunked = is_chunked(headers)
        self.is_head = method == b"HEAD"
        parts = [method, b" ", url, b" HTTP/1.1\r\n"]
        forward_headers(parts, headers)
        if version != "1.1" and not has_header(headers, b"host"):
            parts += (b"host: ", self.listener.destination.encode(), b"\r\n")
        if self.chunked:
            parts.append(b"transfer-encoding: chunked\r\n")
        parts.append(b"\r\n")
        head = b"".join(parts)
        self.pending: list[bytes] = [head]
        self.pending_size = len(head)
        self.sent: list[bytes] | None = [head]
        self.sent_size = len(head)
        self.body_done = False
        self.upstream: UpstreamHttp | None = None
        self.cluster: Any = None
        self.tried: list[Endpoint] = []
        self.endpoint: Endpoint | None = None
        self.timer: asyncio.TimerHandle | None = None
        self.start_time = time.perf_counter()
        self.response_started = False
        self.status = 0
        self.framing = FRAMING_NONE
        self.finished = False
        self.got_response_bytes = False
        self.interim = False
        self.discarding = False
        self.connect_task: asyncio.Task[None] | None = None
        self.last_error = ""

    def __repr__(self) -> str:
        return (f"<Exchange {self.method.decode()} status={self.status} "
                f"tried={len(self.tried)} finished={self.finished}>")

    # -- request side -----------------------------------------------------------------

    def start(self) -> None:
        self.cluster = cluster = self.listener.cluster
        if cluster is None:
            self.local_reply(503, "no_route")
            return
        self.timer = self.loop.call_later(cluster.request_timeout, self.on_timeout)
        self.attempt()

    def attempt(self) -> None:
        endpoint = self.cluster.pick(self.tried)
        if endpoint is None:
            reason = self.last_error or "no_healthy_endpoint"
            self.local_reply(ERROR_STATUS.get(reason, 503), reason)
            return
        self.endpoint = endpoint
        self.tried.append(endpoint)
        pool = self.cluster.pool(endpoint)
        conn = pool.take()
        if conn is not None:
            self.attach(conn, pool)
        else:
            self.connect_task = self.loop.create_task(self.connect(endpoint, pool))

    async def connect(self, endpoint: Endpoint, pool: EndpointPool) -> None:
        try:
            _, conn = await asyncio.wait_for(
                self.loop.create_connection(UpstreamHttp, endpoint.address, endpoint.port),
                self.cluster.connect_timeout)
        except asyncio.CancelledError:
            raise
        except TimeoutError:
            self.connect_failed("connect_timeout")
            return
        except OSError:
            self.connect_failed("connect_refused")
            return
        conn.pool = pool
        if self.finished:
            pool.give(conn)
            return
        self.attach(conn, pool)

    def connect_failed(self, reason: str) -> None:
        self.listener.count(self.listener.metrics.connect_errors, reason)
        if self.finished:
            return
        if self.listener.direction == "inbound":
            self.local_reply(503, LOCAL_APP_REFUSED.decode())
            return
        self.last_error = reason
        self.retry_or_fail(reason, ERROR_STATUS.get(reason, 503))

    def can_retry(self) -> bool:
        return (self.sent is not None and len(self.tried) <= self.cluster.retries
                and not self.response_started)

    def retry_or_fail(self, reason: str, status: int) -> None:
        if self.can_retry():
            self.listener.count(self.listener.metrics.retries, reason)
            self.pending = list(self.sent)  # type: ignore[arg-type]
            self.pending_size = self.sent_size
            self.got_response_bytes = False
            self.attempt()
        else:
            self.local_reply(status, reason)

    def attach(self, conn: UpstreamHttp, pool: EndpointPool) -> None:
        conn.pool = pool
        conn.exchange = self
        self.upstream = conn
        conn.transport.write(b"".join(self.pending))  # type: ignore[union-attr]
        self.pending = []
        self.pending_size = 0
        self.down.resume_reading("buffer")
        if self.down.write_paused:
            conn.set_reading(False)

    def emit(self, data: bytes) -> None:
        if self.finished:
            return
        if self.sent is not None:
            self.sent_size += len(data)
            if self.sent_size > REPLAY_LIMIT:
                self.sent = None
            else:
                self.sent.append(data)
        if self.upstream is not None:
            self.upstream.transport.write(data)  # type: ignore[union-attr]
        else:
            self.pending.append(data)
            self.pending_size += len(data)
            if self.pending_size > BUFFER_HIGH:
                self.down.pause_reading("buffer")

    def request_body(self, body: bytes) -> None:
        self.emit(chunk(body) if self.chunked else body)

    def request_done(self) -> None:
        self.body_done = True
        if self.chunked:
            self.emit(b"0\r\n\r\n")

    # -- response side ----------------------------------------------------------------

    def response_head(self, status: int, reason: bytes, headers: list[tuple[bytes, bytes]]
                      ) -> None:
        if 100 <= status < 200 and status != 101:
            self.interim = True
            self.down.write(b"HTTP/1.1 %d %b\r\n\r\n" % (status, reason))
            return
        if status in (502, 503) and self.listener.direction == "outbound":
            error = header_value(headers, ERROR_HEADER)
            if error is not None and (error == LOCAL_APP_REFUSED or (
                    error == b"upstream_reset" and self.method in IDEMPOTENT)) \
                    and self.can_retry():
                self.discarding = True
                self.last_error = error.decode()
                return
        self.response_started = True
        self.status = status
        if self.is_head or status in (204, 304):
            self.framing = FRAMING_NONE
        elif is_chunked(headers):
            self.framing = FRAMING_CHUNKED
        elif has_header(headers, b"content-length"):
            self.framing = FRAMING_RAW
        elif self.version == "1.1":
            self.framing = FRAMING_CHUNKED
        else:
            self.framing = FRAMING_UNTIL_CLOSE
            self.keep_alive = False
        parts = [b"HTTP/1.1 %d %b\r\n" % (status, reason)]
        forward_headers(parts, headers)
        if self.framing == FRAMING_CHUNKED:
            parts.append(b"transfer-encoding: chunked\r\n")
        if not (self.keep_alive and self.down.keep_open):
            self.keep_alive = False
            parts.append(b"connection: close\r\n")
        parts.append(b"\r\n")
        self.down.write(b"".join(parts))
        if self.is_head and self.upstream is not None:
            self.upstream.reset_parser = True
            self.response_done(True)

    def response_body(self, body: bytes) -> None:
        if self.discarding or self.finished:
            return
        if self.framing == FRAMING_CHUNKED:
            self.down.write(chunk(body))
        else:
            self.down.write(body)

    def response_done(self, upstream_keep_alive: bool) -> None:
        if self.finished:
            return
        if self.interim:
            self.interim = False
            return
        if self.discarding:
            self.discarding = False
            self.release(upstream_keep_alive and self.body_done)
            self.retry_or_fail(self.last_error, ERROR_STATUS.get(self.last_error, 503))
            return
        if self.framing == FRAMING_CHUNKED:
            self.down.write(b"0\r\n\r\n")
        self.finish(upstream_keep_alive and self.body_done)

    def upstream_lost(self, conn: UpstreamHttp) -> None:
        """The upstream connection closed while this exchange was using it."""
        if self.finished:
            return
        self.upstream = None
        if self.framing == FRAMING_UNTIL_CLOSE and self.response_started:
            self.finish(False)
            return
        if not self.response_started:
            replayable = self.sent is not None and not self.got_response_bytes
            if replayable and conn.reused and self.endpoint is not None:
                # A pooled connection the peer had already closed: nothing was processed.
                self.listener.count(self.listener.metrics.retries, "stale_connection")
                self.pending = list(self.sent)  # type: ignore[arg-type]
                self.pending_size = self.sent_size
                pool = self.cluster.pool(self.endpoint)
                self.connect_task = self.loop.create_task(self.connect(self.endpoint, pool))
                return
            self.last_error = "upstream_reset"
            if (replayable and self.method in IDEMPOTENT
                    and self.listener.direction == "outbound"):
                self.retry_or_fail("upstream_reset", 502)
            else:
                self.local_reply(502, "upstream_reset")
            return
        self.listener.count(self.listener.metrics.local_replies, "upstream_reset")
        self.status = 502
        self.finish(False)
        self.down.close()

    def on_timeout(self) -> None:
        self.timer = None
        if self.finished:
            return
        if self.response_started:
            self.status = 504
            self.listener.count(self.listener.metrics.local_replies, "request_timeout")
            self.finish(False)
            self.down.close()
        else:
            self.local_reply(504, "request_timeout")

    # -- completion -------------------------------------------------------------------

    def local_reply(self, status: int, reason: str) -> None:
        """Answer with an error the sidecar made itself; the reason travels in a header."""
        if self.finished:
            return
        if self.response_started:
            self.finish(False)
            self.down.close()
            return
        self.listener.count(self.listener.metrics.local_replies, reason)
        self.status = status
        body = reason.encode() + b"\n"
        keep = self.keep_alive and self.down.keep_open
        self.keep_alive = keep
        self.down.write(
            b"HTTP/1.1 %d %b\r\ncontent-type: text/plain\r\ncontent-length: %d\r\n"
            b"x-meshlet-error: %b\r\n%b\r\n%b" % (
                status, reason.encode(), len(body), reason.encode(),
                b"" if keep else b"connection: close\r\n", body))
        self.finish(False)

    def release(self, reusable: bool) -> None:
        conn = self.upstream
        self.upstream = None
        if conn is None:
            return
        conn.exchange = None
        if reusable and not conn.closed and conn.pool is not None:
            conn.reused = True
            conn.pool.give(conn)
        else:
            conn.close()

    def finish(self, reusable: bool) -> None:
        self.finished = True
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        if self.connect_task is not None and not self.connect_task.done():
            self.connect_task.cancel()
        self.release(reusable)
        listener = self.listener
        listener.metrics.observe_request(listener.direction, listener.destination,
                                         self.status, time.perf_counter() - self.start_time)
        self.pending = []
        self.sent = None
        self.down.exchange_finished(self)

    def abort(self) -> None:
        """The client went away: drop the upstream side without reusing it."""
        if self.finished:
            return
        self.finished = True
        if self.timer is not None:
            self.timer.cancel()
        if self.connect_task is not None and not self.connect_task.done():
            self.connect_task.cancel()
        self.release(False)
        self.listener.active_requests -= 1

"""HTTP/1.1 connections with asyncio Protocols and httptools.

A downstream connection parses requests and queues one ``Exchange`` per request
(``exchange.py``); the head of the queue is in flight, later (pipelined) ones wait with
their bytes buffered. An upstream connection parses the response of the exchange it
serves and goes back to its endpoint's pool, or straight to a request waiting for a
connection, when the response is complete.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Callable

import httptools

# exchange and http import each other's types in the compiled build: this module may
# run before exchange's body has, so it takes only the class at import and looks up
# exchange's functions when it calls them.
from meshlet.proxy import exchange as exchange_module
from meshlet.proxy.cluster import Cluster
from meshlet.proxy.exchange import Exchange
from meshlet.proxy.headers import NOTABLE_LENGTHS, header_flags
from meshlet.proxy.listener import ListenerState
from meshlet.proxy.pool import EndpointPool

log = logging.getLogger(__name__)


def unconnected(data: bytes) -> None:
    raise RuntimeError("a write before the connection was made")


class DownstreamHttp:
    """One client connection to a listener (an asyncio protocol by its methods: a
    compiled build makes it an extension type, which cannot subclass a Python class)."""

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
        self.send: Callable[[bytes], None] = unconnected  # transport.write, looked up once
        self.peer_ip = ""
        self.corked: list[bytes] | None = None
        self.flags = 0

    def __repr__(self) -> str:
        return f"<DownstreamHttp queue={len(self.queue)} closed={self.closed}>"

    # -- asyncio.Protocol -------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.send = self.transport.write  # type: ignore[union-attr]
        self.listener.connections.add(self)
        self.listener.active_gauge.inc()
        peer = transport.get_extra_info("peername")
        self.peer_ip = str(peer[0]) if peer else ""

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
        self.flags = 0

    def on_url(self, url: bytes) -> None:
        self.url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers.append((name, value))
        if len(name) in NOTABLE_LENGTHS:
            self.flags |= header_flags(name, value)

    def on_headers_complete(self) -> None:
        p = self.parser
        ex = Exchange(self, p.get_method(), self.url, self.headers, p.should_keep_alive(),
                      p.get_http_version(), self.flags)
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
        if self.corked is not None:
            self.corked.append(data)
        elif not self.closed:
            self.send(data)

    def cork(self) -> None:
        """Hold writes until ``uncork``: one send for a response head and its body."""
        if self.corked is None:
            self.corked = []

    def uncork(self) -> None:
        held, self.corked = self.corked, None
        if held and not self.closed:
            self.send(b"".join(held) if len(held) > 1 else held[0])

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
            if self.corked:
                self.uncork()
            self.closed = True
            self.transport.close()


class _RelayedResponse:
    """Parser callbacks for a relayed response: no per-header or body callbacks, only
    what is needed to learn the status and where the message ends."""

    __slots__ = ("conn",)

    def __init__(self, conn: UpstreamHttp) -> None:
        self.conn = conn

    def on_headers_complete(self) -> None:
        conn = self.conn
        if conn.exchange is not None:
            conn.exchange.relayed_head(conn.relay_parser.get_status_code(), conn.relay_data)

    def on_message_complete(self) -> None:
        conn = self.conn
        ex = conn.exchange
        if ex is not None and ex.interim:
            ex.interim = False
        else:
            conn.relay_done = True
            conn.relay_keep_alive = conn.relay_parser.should_keep_alive()


class UpstreamHttp:
    """One pooled connection to an upstream endpoint (a protocol, as DownstreamHttp)."""

    def __init__(self, cluster: Cluster, listener: ListenerState) -> None:
        self.cluster = cluster
        self.listener = listener
        self.parser = httptools.HttpResponseParser(self)
        self.relay_parser = httptools.HttpResponseParser(_RelayedResponse(self))
        self.relay_data = b""
        self.relay_done = False
        self.relay_keep_alive = False
        self.transport: asyncio.Transport | None = None
        self.exchange: Exchange | None = None
        self.pool: EndpointPool | None = None
        self.closed = False
        self.reused = False
        self.reason = b""
        self.headers: list[tuple[bytes, bytes]] = []
        self.reset_parser = False
        self.idle_since = 0.0
        self.flags = 0
        self.send: Callable[[bytes], None] = unconnected  # transport.write, looked up once

    def __repr__(self) -> str:
        return f"<UpstreamHttp busy={self.exchange is not None} closed={self.closed}>"

    def release(self, now: float) -> None:
        """The exchange is done with this connection: serve a waiting one, or pool it."""
        cluster = self.cluster
        while cluster.pending:
            waiting = cluster.pending.popleft()
            waiting.waiting = False
            if not waiting.finished and self.pool is not None:
                waiting.attach(self, self.pool)
                return
        if self.pool is None or not self.pool.give(self, now):
            self.close()

    @property
    def usable(self) -> bool:
        return not self.closed and self.exchange is None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.send = self.transport.write  # type: ignore[union-attr]

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        ex = self.exchange
        if ex is not None:
            self.exchange = None
            ex.upstream_lost(self)
        elif self.pool is not None:
            self.pool.discard(self)
        exchange_module.connection_closed(self.cluster)

    def eof_received(self) -> None:
        return None  # close the transport: the end of a response is found by parsing

    def data_received(self, data: bytes) -> None:
        ex = self.exchange
        if ex is None:
            self.close()  # unsolicited bytes on an idle connection: not safe to reuse
            return
        ex.got_response_bytes = True
        down = ex.down
        if ex.relay:
            self.relay(ex, data)
            return
        down.cork()
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError:
            self.close()
            return
        finally:
            down.uncork()
        if self.reset_parser:
            self.reset_parser = False
            self.parser = httptools.HttpResponseParser(self)

    def relay(self, ex: Exchange, data: bytes) -> None:
        """Pass the response's bytes on untouched; the parser only finds its end."""
        down = ex.down
        self.relay_done = False
        self.relay_data = data
        down.cork()
        try:
            self.relay_parser.feed_data(data)
        except httptools.HttpParserError:
            self.close()
            return
        finally:
            if not ex.discarding and (ex.response_started or ex.interim or self.relay_done):
                if ex.relay_head is not None:  # a head rewritten (draining): the rest as is
                    head, replaced = ex.relay_head
                    ex.relay_head = None
                    data = head + data[replaced:]
                down.write(data)
            if self.relay_done and self.exchange is ex:
                ex.response_done(self.relay_keep_alive)
            down.uncork()

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
        self.flags = 0

    def on_status(self, reason: bytes) -> None:
        self.reason += reason

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers.append((name, value))
        if len(name) in NOTABLE_LENGTHS:
            self.flags |= header_flags(name, value)

    def on_headers_complete(self) -> None:
        if self.exchange is not None:
            self.exchange.response_head(self.parser.get_status_code(), self.reason,
                                        self.headers, self.flags)

    def on_body(self, body: bytes) -> None:
        if self.exchange is not None:
            self.exchange.response_body(body)

    def on_message_complete(self) -> None:
        if self.exchange is not None:
            self.exchange.response_done(self.parser.should_keep_alive())

"""Downstream HTTP/1.1 connections, with asyncio Protocols and httptools.

A downstream connection parses requests and queues one ``Exchange`` per request
(``exchange.py``); the head of the queue is in flight, later (pipelined) ones wait with
their bytes buffered. The upstream side is ``upstream.py``.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Callable

import httptools

# exchange and http import each other's types in the compiled build: this module may
# run before exchange's body has, so it imports only classes from there (and from
# listener, in the same cycle), which exist before a compiled module's body runs.
from meshlet.proxy.exchange import Exchange
from meshlet.proxy.headers import NOTABLE_LENGTHS, header_flags, unconnected
from meshlet.proxy.listener import ListenerState

log = logging.getLogger(__name__)


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

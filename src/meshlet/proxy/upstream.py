"""One upstream HTTP/1.1 connection: an asyncio protocol with httptools parsers that
feeds the response of the exchange it serves back to it, re-framed or relayed as is.

It belongs to its cluster's ``ConnectionPool`` and is opened, handed over and closed by
a ``Connector`` (``connector.py``); it keeps no books of its own, but for ``counted``:
whether it still holds its pool's slot. When it closes, it tells the connector, which
gives the slot back, then tells the exchange it served, if any.

A response it parses (not one relayed, whose bytes it passes on as they come) has its
trailers dropped and bounded as a request's are (``http.py``): over 64 KiB of trailers,
or of reads in a chunked body that held no body bytes (a chunk line or a trailer that
never ends), and the upstream counts as failed: the connection is closed, so the client
gets the 502 path (a response begun is cut off).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import TYPE_CHECKING

import httptools

from meshlet.http_limits import MAX_HEAD_BYTES
from meshlet.proxy.headers import NOTABLE_LENGTHS, header_flags, unconnected
from meshlet.proxy.plain_head import COMPILED as PLAIN_HEADS
from meshlet.proxy.plain_head import plain_response

if TYPE_CHECKING:  # cimported by the compiled build (upstream.pxd)
    from meshlet.proxy.connector import Connector
    from meshlet.proxy.exchange import Exchange
    from meshlet.proxy.pool import ConnectionPool

LINE_OVERHEAD = 4  # ": " and CRLF around a trailer's name and value


class TrailersRefused(Exception):
    """Raised in a parser callback to stop parsing a response whose trailers are too large."""


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
    """One pooled connection to endpoint ``key`` (an asyncio protocol by its methods: a
    compiled build makes it an extension type, which cannot subclass a Python class)."""

    def __init__(self, pool: ConnectionPool, key: tuple[str, int],
                 connector: Connector) -> None:
        self.pool = pool
        self.key = key
        self.connector = connector
        self.parser = httptools.HttpResponseParser(self)
        self.relay_parser = httptools.HttpResponseParser(_RelayedResponse(self))
        self.relay_data = b""
        self.relay_done = False
        self.relay_keep_alive = False
        self.relay_fresh = True  # the relay parser is at a message's start
        self.transport: asyncio.Transport | None = None
        self.exchange: Exchange | None = None
        self.closed = False
        self.counted = True  # made in a slot its pool reserved; the pool clears it
        self.reused = False
        self.reason = b""
        self.headers: list[tuple[bytes, bytes]] = []
        self.reset_parser = False
        self.idle_since = 0.0
        self.flags = 0
        self.in_body = False  # the head of the response being parsed is complete
        self.body_seen = False  # the chunk being parsed held body bytes
        self.framing_raw = 0  # bytes of the reads in a body that held none of it
        self.trailer_size = 0
        self.send: Callable[[bytes], None] = unconnected  # transport.write, looked up once

    def __repr__(self) -> str:
        return (f"<UpstreamHttp {self.key} busy={self.exchange is not None} "
                f"closed={self.closed}>")

    @property
    def usable(self) -> bool:
        return not self.closed and self.exchange is None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.send = self.transport.write  # type: ignore[union-attr]

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.connector.lost(self)

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
        body_began = self.in_body
        self.body_seen = False
        down.cork()
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError:
            self.close()
            return
        finally:
            down.uncork()
        if self.body_seen:
            self.framing_raw = 0
        elif body_began and self.in_body:  # all of it chunk lines or trailers
            self.framing_raw += len(data)
            if self.framing_raw > MAX_HEAD_BYTES:
                self.close()
                return
        if self.reset_parser:
            self.reset_parser = False
            self.in_body = False
            self.parser = httptools.HttpResponseParser(self)

    def relay(self, ex: Exchange, data: bytes) -> None:
        """Pass the response's bytes on untouched; the parser only finds its end (or,
        for a whole plain response in one read, ``plain_head.py`` does)."""
        self.relay_done = False
        self.relay_data = data
        plain = plain_response(data) if PLAIN_HEADS and self.relay_fresh else 0
        if plain:  # status << 1 | keep-alive
            ex.relayed_head(plain >> 1, data)
            self.relay_done = True
            self.relay_keep_alive = bool(plain & 1)
        else:
            self.relay_fresh = False
            try:
                self.relay_parser.feed_data(data)
            except httptools.HttpParserError:
                self.close()
            if self.relay_done:  # the next response starts at a parser's beginning
                self.relay_parser = httptools.HttpResponseParser(_RelayedResponse(self))
                self.relay_fresh = True
        down = ex.down
        down.cork()
        try:
            if not ex.discarding and (ex.response_started or ex.interim or self.relay_done):
                if ex.relay_head is not None:  # a head rewritten (draining): the rest as is
                    head, replaced = ex.relay_head
                    ex.relay_head = None
                    data = head + data[replaced:]
                down.write(data)
            if self.relay_done and self.exchange is ex:
                ex.response_done(self.relay_keep_alive)
        finally:
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
        self.in_body = False

    def on_status(self, reason: bytes) -> None:
        self.reason += reason

    def on_header(self, name: bytes, value: bytes) -> None:
        if self.in_body:  # a trailer, after a chunked body: dropped
            self.trailer_size += len(name) + len(value) + LINE_OVERHEAD
            if self.trailer_size > MAX_HEAD_BYTES:
                raise TrailersRefused(f"trailers over {MAX_HEAD_BYTES} bytes")
            return
        self.headers.append((name, value))
        if len(name) in NOTABLE_LENGTHS:
            self.flags |= header_flags(name, value)

    def on_headers_complete(self) -> None:
        self.in_body = True
        self.framing_raw = 0
        self.trailer_size = 0
        if self.exchange is not None:
            self.exchange.response_head(self.parser.get_status_code(), self.reason,
                                        self.headers, self.flags)

    def on_body(self, body: bytes) -> None:
        self.body_seen = True
        if self.exchange is not None:
            self.exchange.response_body(body)

    def on_message_complete(self) -> None:
        self.in_body = False
        if self.exchange is not None:
            self.exchange.response_done(self.parser.should_keep_alive())

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

Bytes past the end of the response to the request sent are not the answer to anything:
the connection is closed rather than reused, and they never reach a client. A response
is relayed only when the read that begins it holds its whole head and it is not a 1xx;
otherwise it is parsed from its first byte, which reads any head however it was split.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

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
# httptools raises HttpParserUpgrade, not an HttpParserError, for an upgrade's answer.
PARSE_ERRORS = (httptools.HttpParserError, httptools.HttpParserUpgrade)


class TrailersRefused(Exception):
    """Raised in a parser callback to stop parsing a response whose trailers are too large."""


class UnsolicitedBytes(Exception):
    """Raised in a parser callback when bytes follow the end of the response: the
    upstream answered more than it was asked, so nothing after that end is trusted."""


class _RelayedResponse:
    """Parser callbacks for a relayed response: no per-header or body callbacks, only
    what is needed to learn the status and where the message ends."""

    __slots__ = ("conn",)

    def __init__(self, conn: UpstreamHttp) -> None:
        self.conn = conn

    def on_message_begin(self) -> None:
        if self.conn.relay_done:
            raise UnsolicitedBytes("a second response to one request")

    def on_headers_complete(self) -> None:
        conn = self.conn
        conn.relay_status = conn.relay_parser.get_status_code()

    def on_message_complete(self) -> None:
        conn = self.conn
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
        self.relay_parser: Any = None
        self.relay_fresh = True  # the relay parser is at a message's start
        self.restart_relay()
        self.relay_status = 0  # of the relayed response's head, once it is complete
        self.relay_done = False
        self.relay_keep_alive = False
        self.transport: asyncio.Transport | None = None
        self.exchange: Exchange | None = None
        self.closed = False
        self.counted = True  # made in a slot its pool reserved; the pool clears it
        self.reused = False
        self.reason = b""
        self.headers: list[tuple[bytes, bytes]] = []
        self.reset_parser = False
        self.done_pending = False  # the response is whole: its exchange is told after the read
        self.done_keep_alive = False
        self.head_size = 0  # bytes read since the head being parsed began (bounded)
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
        if ex.relay:
            self.relay(ex, data)
        else:
            self.parse(ex, data)

    def parse(self, ex: Exchange, data: bytes) -> None:
        """Feed ``data`` to the full parser, whose callbacks rebuild the response; its
        exchange hears of the end only after the whole read, so that bytes past it are
        seen before the connection could go back to the pool."""
        body_began = self.in_body
        self.body_seen = False
        if not body_began:
            self.head_size += len(data)
        down = ex.down
        down.cork()
        try:
            try:
                self.parser.feed_data(data)
                intact = True
            except PARSE_ERRORS:  # malformed, or bytes past a whole response: not reusable
                self.close()
                intact = False
            if self.done_pending:
                self.done_pending = False
                ex.response_done(intact and self.done_keep_alive)
        finally:
            down.uncork()
        if not intact:
            return
        if not self.in_body and self.head_size > MAX_HEAD_BYTES:
            self.close()  # a head that never ends: the 502 path, not memory without end
            return
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
            self.head_size = 0
            self.parser = httptools.HttpResponseParser(self)

    def relay(self, ex: Exchange, data: bytes) -> None:
        """Pass the response's bytes on untouched; the parser only finds its end (or,
        for a whole plain response in one read, ``plain_head.py`` does)."""
        fresh = self.relay_fresh  # this read begins the response
        self.relay_done = False
        if fresh:
            plain = plain_response(data) if PLAIN_HEADS else 0
            if plain:  # status << 1 | keep-alive
                self.relay_done = True
                self.relay_keep_alive = bool(plain & 1)
                ex.relayed_head(plain >> 1, data)
                self.pass_on(ex, data)
                return
            self.relay_status = 0
            self.relay_fresh = False
        try:
            self.relay_parser.feed_data(data)
        except PARSE_ERRORS:  # malformed, or bytes past the response's end
            if fresh:
                self.parse_instead(ex, data)
                return
            self.close()  # part of the response is out: the client's connection is cut off
            if ex.discarding and self.relay_done:  # none of it is: the retry goes ahead
                ex.response_done(False)
            return
        if fresh:
            status = self.relay_status
            if status < 200:  # 0 until the head is complete
                self.parse_instead(ex, data)  # a head split over reads, or an interim answer
                return
            ex.relayed_head(status, data)
        self.pass_on(ex, data)

    def pass_on(self, ex: Exchange, data: bytes) -> None:
        """Write a relayed read to the client, and end the exchange if the response is."""
        done = self.relay_done
        if done and not self.relay_fresh:  # the next response starts at a parser's beginning
            self.restart_relay()
        down = ex.down
        down.cork()
        try:
            if ex.response_started and not ex.discarding:
                if ex.relay_head is not None:  # a head rewritten (draining): the rest as is
                    head, replaced = ex.relay_head
                    ex.relay_head = None
                    data = head + data[replaced:]
                down.write(data)
            if done and self.exchange is ex:
                ex.response_done(self.relay_keep_alive)
        finally:
            down.uncork()

    def parse_instead(self, ex: Exchange, data: bytes) -> None:
        """Read this response with the full parser from its first byte, ``data``: none of
        it was written, and the relay parser is set aside for the next one."""
        ex.relay = False
        self.restart_relay()
        self.relay_done = False
        self.parse(ex, data)

    def restart_relay(self) -> None:
        """A fresh relay parser: one that has seen part of a message cannot be rewound."""
        self.relay_parser = httptools.HttpResponseParser(_RelayedResponse(self))
        self.relay_fresh = True

    def no_body_follows(self) -> None:
        """The answer to HEAD is whole at its head, whatever its head says of a body."""
        self.reset_parser = True
        self.done_pending = True
        self.done_keep_alive = True

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
        if self.done_pending:
            raise UnsolicitedBytes("a second response to one request")
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
        self.head_size = 0
        self.framing_raw = 0
        self.trailer_size = 0
        status = self.parser.get_status_code()
        if status == 101:  # upgrades take their own path (upgrade.py): none was asked here
            raise UnsolicitedBytes("101 to a request that asked for no upgrade")
        if self.exchange is not None:
            self.exchange.response_head(status, self.reason, self.headers, self.flags)

    def on_body(self, body: bytes) -> None:
        if self.done_pending:  # a body after the head of an answer to HEAD
            raise UnsolicitedBytes("a body in the answer to HEAD")
        self.body_seen = True
        if self.exchange is not None:
            self.exchange.response_body(body)

    def on_message_complete(self) -> None:
        self.in_body = False
        self.head_size = 0
        ex = self.exchange
        if ex is None or self.done_pending:
            return
        if ex.interim:  # a 1xx: the answer is still to come
            ex.response_done(True)
            return
        self.done_pending = True
        self.done_keep_alive = self.parser.should_keep_alive()

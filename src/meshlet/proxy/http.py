"""Downstream HTTP/1.1 connections, with asyncio Protocols and httptools.

A downstream connection parses requests and queues one ``Exchange`` per request
(``exchange.py``); the head of the queue is in flight, later (pipelined) ones wait with
their bytes buffered. The upstream side is ``upstream.py``.

A connection bounds what a client can make it hold (``meshlet.http_limits``): the
request target (414), the head's size and header count (431), the time a head may take
to arrive whole, from its first byte or from the connection's start (408, or a plain
close if nothing came), and the time a kept-alive connection may wait idle for its next
request (the listener's ``idle_timeout``; then it is closed). Sizes are counted in the
parser's callbacks and, for a head still incomplete when a read ends, by the bytes read
since it began: httptools gathers a header line before handing it over, so a line that
never ends is bounded here (a head that begins after another request in the same read is
counted from the next read on). Two Host headers and HTTP/0.9 (400) and CONNECT
(501) are refused too; ``Upgrade: h2c`` switches to HTTP/2 (``h2_downstream.py``), or
for a request with a body is declined (served in HTTP/1.1); other ``Upgrade`` requests
(WebSocket) become a tunnel (``upgrade.py``) that the connection hands its bytes to
from then on. A refusal is answered once, its reason in ``x-meshlet-error``, and the
connection closed. Trailers after a chunked body are dropped, never added to a head.
They are bounded as a head is (431, answered by the request unless its response has
begun): by their callbacks' sizes, and, with the lines of a chunked body (a chunk's
size and extensions), by the bytes of the reads in a body that held none of it, so a
trailer or extension that never ends is refused at 64 KiB (counted from the read after
the last body bytes).
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Callable
from typing import Any

import httptools

from meshlet.http_limits import (
    BAD_REQUEST,
    HEAD_TIMEOUT_CODE,
    HEAD_TOO_LARGE,
    MAX_HEAD_BYTES,
    MAX_HEADERS,
    MAX_URL_BYTES,
    UPGRADE_UNSUPPORTED,
    URL_TOO_LONG,
)

# exchange and http import each other's types in the compiled build: this module may
# run before exchange's body has, so it imports only classes from there (and from
# listener, in the same cycle), which exist before a compiled module's body runs.
from meshlet.proxy.exchange import Exchange
from meshlet.proxy.headers import (
    CHUNKED,
    HAS_HOP_BY_HOP,
    HAS_HOST,
    NOTABLE_LENGTHS,
    header_flags,
    unconnected,
)
from meshlet.proxy.listener import ListenerState
from meshlet.proxy.mesh_tls import caller_service
from meshlet.proxy.opaque import HTTP, SILENT, OpaqueRelay, first_bytes_kind, opaque_allowed
from meshlet.proxy.plain_head import COMPILED as PLAIN_HEADS
from meshlet.proxy.plain_head import PlainRequest, plain_request
from meshlet.proxy.upgrade import Tunnel, upgrade_token

log = logging.getLogger(__name__)
LINE_OVERHEAD = 4  # ": " and CRLF around a header's name and value
UPGRADE_TOKENS = frozenset({b"upgrade", b"http2-settings"})  # a declined h2c upgrade's
H2_PREFACE = b"PRI * HTTP/2.0"  # how an HTTP/2 client with prior knowledge begins


class HeadRefused(Exception):
    """Raised in a parser callback to stop parsing a head the connection refuses."""


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
        self.source = ""  # the caller's service, from its certificate ("": none)
        self.corked: list[bytes] | None = None
        self.flags = 0
        self.in_head = False  # a request's first byte came, its head is not complete
        self.head_size = 0  # the head's bytes as the callbacks saw them
        self.head_raw = 0  # bytes of the chunks read while the head was incomplete
        self.no_end_yet = False  # no message ended in the chunk being parsed
        self.body_seen = False  # the chunk being parsed held body bytes
        self.framing_raw = 0  # bytes of the reads in a body that held none of it
        self.head_deadline = 0.0  # 0: a request in flight; else its head's or idle limit
        self.refused = 0  # the status of a refusal a callback decided
        self.refusal = ""
        self.refusal_detail = ""
        # What the connection switched to, if it did: an upgrade's tunnel (upgrade.py) or
        # HTTP/2 (h2_downstream.py); it gets the connection's bytes from then on.
        self.switched: Any = None
        self.detecting = True  # no byte seen yet: the first ones say the protocol
        self.opened_at = 0.0

    def __repr__(self) -> str:
        return f"<DownstreamHttp queue={len(self.queue)} closed={self.closed}>"

    # -- asyncio.Protocol -------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        if len(self.listener.connections) >= self.listener.max_connections:
            self.closed = True  # not counted among the connections: no answer, no gauge
            self.listener.metrics.connections_refused.labels(
                self.listener.direction, self.listener.destination).inc()
            transport.close()
            return
        self.send = self.transport.write  # type: ignore[union-attr]
        self.listener.connections.add(self)
        self.listener.active_gauge.inc()
        peer = transport.get_extra_info("peername")
        self.peer_ip = str(peer[0]) if peer else ""
        if self.listener.tls is not None:  # inbound in mutual TLS: who is calling
            self.source = caller_service(transport, self.listener.tls)
        listener = self.listener
        self.opened_at = listener.now
        wait = listener.head_timeout
        if listener.detect_timeout < wait and opaque_allowed(listener):
            wait = listener.detect_timeout  # then a silent client is relayed as bytes
        self.head_deadline = listener.now + wait

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self not in self.listener.connections:
            return  # refused at max_connections (connection_made)
        self.listener.connections.discard(self)
        self.listener.active_gauge.dec()
        for ex in list(self.queue):
            ex.abort()
        self.queue.clear()
        if self.switched is not None:
            self.switched.close()

    def data_received(self, data: bytes) -> None:
        if self.switched is not None:
            self.switched.from_client(data)
            return
        if self.detecting:
            self.detecting = False
            kind = first_bytes_kind(data)
            if kind != HTTP and opaque_allowed(self.listener):
                self.relay_opaque(data, kind)
                return
        inside = self.in_head
        if PLAIN_HEADS and not inside and self.parsing is None and not self.queue:
            plain = plain_request(data)
            if plain is not None:  # one whole head, no body: read without httptools
                self.plain_request(plain, data)
                return
        if inside:  # this chunk starts inside a head: all of it is head, or after it
            self.head_raw += len(data)
        body_of = self.parsing  # the request whose body this chunk goes on with, if any
        self.no_end_yet = True  # until a message ends in this chunk
        self.body_seen = False
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade as upgrade:
            self.upgrade(data[upgrade.args[0]:])
            return
        except httptools.HttpParserCallbackError:
            if self.refused:
                self.fail_parse(self.refused, self.refusal, self.refusal_detail)
            else:
                log.exception("sidecar bug while handling a request; closing the connection")
                self.close()
            return
        except httptools.HttpParserError:
            if not self.queue and data.startswith(H2_PREFACE):
                self.speak_h2(data)
            else:
                self.fail_parse(400, BAD_REQUEST)
            return
        if self.in_head:  # the rare case: a read ended inside a head
            if not inside and self.no_end_yet:  # and the head began the read
                self.head_raw = len(data)
            if self.head_raw > MAX_HEAD_BYTES:
                self.fail_parse(431, HEAD_TOO_LARGE,
                                f"a request head over {MAX_HEAD_BYTES} bytes")
            elif not self.headers and data[-1:] == b"\n" \
                    and self.parser.get_http_version() == "0.0":
                # A request line ended with no version: HTTP/0.9, which llhttp would
                # take once a blank line follows (and relay as HTTP/1.1).
                self.fail_parse(400, BAD_REQUEST, "HTTP/0.9 is not served")
        elif self.body_seen:
            self.framing_raw = 0
        elif body_of is not None and self.parsing is body_of:
            # All of it chunk lines or trailers (llhttp gathers neither; httptools
            # gathers a trailer line until it ends).
            self.framing_raw += len(data)
            if self.framing_raw > MAX_HEAD_BYTES:
                self.fail_parse(431, HEAD_TOO_LARGE, f"a chunk line or trailers over "
                                                     f"{MAX_HEAD_BYTES} bytes")

    def eof_received(self) -> bool | None:
        if self.switched is not None:
            return True if self.switched.client_eof() else None
        if self.parsing is not None:  # cut off mid-body: that request can never finish,
            self.close()              # so its upstream side goes now, not at its timeout
            return None
        if self.queue:
            self.half_closed = True
            return True
        return None

    def pause_writing(self) -> None:
        self.write_paused = True
        if self.switched is not None:
            self.switched.set_upstream_reading(False)
        if self.queue and self.queue[0].upstream is not None:
            self.queue[0].upstream.set_reading(False)

    def resume_writing(self) -> None:
        self.write_paused = False
        if self.switched is not None:
            self.switched.set_upstream_reading(True)
        if self.queue and self.queue[0].upstream is not None:
            self.queue[0].upstream.set_reading(True)

    # -- httptools callbacks ----------------------------------------------------------

    def on_message_begin(self) -> None:
        self.url = b""
        if self.headers:  # a head refused midway (its connection closes): not reused
            self.headers = []
        self.flags = 0
        self.in_head = True
        self.head_size = 0
        self.head_raw = 0
        self.head_deadline = self.listener.now + self.listener.head_timeout

    def on_url(self, url: bytes) -> None:
        self.head_size += len(url)  # the target comes before any header
        if self.head_size > MAX_URL_BYTES:
            self.refuse(414, URL_TOO_LONG, f"a request target over {MAX_URL_BYTES} bytes")
        self.url = self.url + url if self.url else url  # split across reads: bounded

    def on_header(self, name: bytes, value: bytes) -> None:
        if not self.in_head:
            # A trailer, after a chunked body: httptools reports it as a header. Dropped,
            # never added to a head (an exchange still queued builds its head later);
            # trailers are not relayed to HTTP/1.1 upstreams. Bounded as a head is.
            self.head_size += len(name) + len(value) + LINE_OVERHEAD
            if self.head_size > MAX_HEAD_BYTES:
                self.refuse(431, HEAD_TOO_LARGE, f"trailers over {MAX_HEAD_BYTES} bytes")
            return
        self.head_size += len(name) + len(value) + LINE_OVERHEAD
        if self.head_size > MAX_HEAD_BYTES or len(self.headers) >= MAX_HEADERS:
            self.refuse(431, HEAD_TOO_LARGE, f"a request head over {MAX_HEAD_BYTES} bytes "
                                             f"or {MAX_HEADERS} headers")
        self.headers.append((name, value))
        if len(name) in NOTABLE_LENGTHS:
            flags = header_flags(name, value)
            if flags & self.flags & HAS_HOST:
                self.refuse(400, BAD_REQUEST, "two Host headers")
            self.flags |= flags

    def on_headers_complete(self) -> None:
        p = self.parser
        self.in_head = False
        self.head_deadline = 0.0
        self.head_size = 0  # from here on, the trailers'
        self.framing_raw = 0
        method = p.get_method()
        if (self.flags & HAS_HOP_BY_HOP or method == b"CONNECT") and p.should_upgrade():
            return  # feed_data raises HttpParserUpgrade next: answered 501 there
        version = p.get_http_version()
        if version == "0.9":
            self.refuse(400, BAD_REQUEST, "HTTP/0.9 is not served")
        ex = Exchange(self, method, self.url, self.headers, p.should_keep_alive(),
                      version, self.flags)
        self.headers = []  # the list is the exchange's now; the next head gets its own
        self.begin(ex)

    def begin(self, ex: Exchange) -> None:
        """A request's head is complete: it is in flight, or waits behind another."""
        self.parsing = ex
        self.queue.append(ex)
        self.listener.active_requests += 1
        if len(self.queue) == 1:
            ex.start()
        else:
            self.pause_reading("pipelined")

    def plain_request(self, plain: PlainRequest, data: bytes) -> None:
        """A whole request with no body (``plain_head.py``), as the parser's callbacks
        would have taken it: head complete, then message complete."""
        self.head_deadline = 0.0
        self.framing_raw = 0
        method, url, headers, flags, keep_alive, version = plain
        ex = Exchange(self, method, url, headers, keep_alive, version, flags,
                      data if version == "1.1" else b"")
        self.begin(ex)
        ex.request_done()
        self.parsing = None

    def on_body(self, body: bytes) -> None:
        self.body_seen = True
        if self.parsing is not None:
            self.parsing.request_body(body)

    def on_message_complete(self) -> None:
        self.no_end_yet = False
        if self.parsing is not None:
            self.parsing.request_done()
            self.parsing = None

    def upgrade(self, rest: bytes) -> None:
        """The head just parsed asks for CONNECT or a protocol upgrade; ``rest`` is what
        followed it (the new protocol's first bytes, or a body)."""
        method = self.parser.get_method()
        token = upgrade_token(self.headers)
        if method == b"CONNECT" or token == b"":
            self.fail_parse(501, UPGRADE_UNSUPPORTED, "CONNECT is not relayed")
            return
        if self.queue:
            self.fail_parse(400, BAD_REQUEST, "an upgrade pipelined behind another request")
            return
        if token == b"h2c":
            self.upgrade_h2c(method, rest)
            return
        self.switched = tunnel = Tunnel(self, method, self.url, self.headers, self.flags)
        self.headers = []
        if rest:
            tunnel.early.append(rest)
        tunnel.start()

    def upgrade_h2c(self, method: bytes, rest: bytes) -> None:
        """``Upgrade: h2c`` (RFC 7540 3.2): 101, then HTTP/2, the request its stream 1.
        One with a body is served in HTTP/1.1, its upgrade declined (RFC 9110 7.8: a
        server may ignore it), and one without exactly one valid ``HTTP2-Settings``
        refused."""
        from meshlet.proxy.h2_downstream import H2Downstream, upgraded_request
        settings = [v for k, v in self.headers if k.lower() == b"http2-settings"]
        length = next((v for k, v in self.headers if k.lower() == b"content-length"), b"0")
        if self.flags & CHUNKED or length.strip() not in (b"", b"0"):
            self.decline_upgrade(method, rest)
            return
        try:
            if len(settings) != 1:
                raise ValueError("one HTTP2-Settings header")
            h2 = H2Downstream(self, settings[0])
        except ValueError as exc:
            self.fail_parse(400, BAD_REQUEST, f"h2c upgrade: {exc}")
            return
        self.in_head = False
        self.write(b"HTTP/1.1 101 Switching Protocols\r\nconnection: Upgrade\r\n"
                   b"upgrade: h2c\r\n\r\n")
        self.switched = h2
        h2.flush()
        h2.request(1, upgraded_request(method, self.url, self.headers), True)
        self.headers = []
        h2.flush_soon()
        if rest:
            h2.from_client(rest)

    def decline_upgrade(self, method: bytes, rest: bytes) -> None:
        """Serve the request just parsed as plain HTTP/1.1: its head, less the upgrade's
        headers, is parsed again by a new parser, with the body and what follows it
        (httptools stopped at the head: an upgrade request's body is the new protocol's
        as far as it knows). The head was bounded on the way in, so it is again."""
        version = self.parser.get_http_version()
        parts = [method, b" ", self.url, b" HTTP/%s\r\n" % version.encode()]
        for name, value in self.headers:
            lower = name.lower()
            if lower == b"connection":  # its other options (close) still hold
                value = b", ".join(t for t in (t.strip() for t in value.split(b","))
                                   if t.lower() not in UPGRADE_TOKENS)
            if value and lower not in UPGRADE_TOKENS:
                parts += (name, b": ", value, b"\r\n")
        parts += (b"\r\n", rest)
        self.headers = []
        self.parser = httptools.HttpRequestParser(self)
        self.data_received(b"".join(parts))

    def speak_h2(self, data: bytes) -> None:
        """The connection opened with HTTP/2's preface (h2c, prior knowledge)."""
        from meshlet.proxy.h2_downstream import H2Downstream  # imports this module
        self.in_head = False
        self.headers = []
        self.switched = h2 = H2Downstream(self)
        h2.idle_check()
        h2.from_client(data)

    def relay_opaque(self, data: bytes, kind: str) -> None:
        """The client speaks something else than HTTP (``opaque.py``): its bytes go
        upstream as they are."""
        self.in_head = False
        self.switched = relay = OpaqueRelay(self, data, kind)
        relay.start()

    def switched_closed(self) -> None:
        self.close()

    def refuse(self, status: int, reason: str, detail: str) -> None:
        """Stop parsing: ``data_received`` answers ``status`` once the parser returns."""
        self.refused = status
        self.refusal = reason
        self.refusal_detail = detail
        raise HeadRefused(reason)

    def head_timed_out(self) -> None:
        """Called by the listener once ``head_deadline`` has passed with no request in
        flight: a head begun gets 408; a connection that sent nothing since it opened or
        since its last answer (idle) is closed."""
        self.head_deadline = 0.0
        listener = self.listener
        if self.detecting and self.switched is None:  # not a byte yet
            if listener.detect_timeout < listener.head_timeout and opaque_allowed(listener):
                self.detecting = False
                self.relay_opaque(b"", SILENT)  # the server may speak first
            elif listener.now < self.opened_at + listener.head_timeout:
                self.head_deadline = self.opened_at + listener.head_timeout  # wait on
            else:
                self.close()
            return
        if self.in_head:
            self.fail_parse(408, HEAD_TIMEOUT_CODE,
                            f"the request head took over {self.listener.head_timeout:g} s")
        else:
            self.close()

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
        else:  # the next head's time starts now that it is read again, or the idle time
            self.head_deadline = self.listener.now + (
                self.listener.head_timeout if self.in_head else self.listener.idle_timeout)
        if len(self.queue) <= 1:
            self.resume_reading("pipelined")

    def fail_parse(self, status: int, reason: str, detail: str = "") -> None:
        self.in_head = False
        self.head_deadline = 0.0
        if self.queue:  # a body refused: its request answers, if it is the one in flight
            ex = self.parsing
            if ex is not None and ex is self.queue[0]:
                ex.keep_alive = False
                ex.local_reply(status, reason, detail)  # or cuts a response begun
            self.close()
            return
        body = (f"{reason}: {detail}\n" if detail else f"{reason}\n").encode()
        self.write(b"HTTP/1.1 %d %b\r\ncontent-length: %d\r\nx-meshlet-error: %b\r\n"
                   b"connection: close\r\n\r\n%b" % (status, reason.encode(), len(body),
                                                     reason.encode(), body))
        self.listener.count(self.listener.metrics.local_replies, reason)
        self.close()

    def drain(self) -> None:
        if self.switched is not None:  # HTTP/2: GOAWAY; a tunnel: ends at the stop's grace
            self.switched.drain()
        elif not self.queue:
            self.close()

    def close(self) -> None:
        if not self.closed and self.transport is not None:
            if self.corked:
                self.uncork()
            self.closed = True
            self.transport.close()
        if self.switched is not None:
            self.switched.close()

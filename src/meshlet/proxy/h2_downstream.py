"""HTTP/2 from the client (h2c with prior knowledge), translated to HTTP/1.1 upstream.

A client connection that opens with the HTTP/2 preface is handed to an ``H2Downstream``
(the ``h2`` library keeps the protocol's state: frames, HPACK, flow control, stream
states). Each request stream becomes an ``Exchange``, exactly as an HTTP/1.1 request
does, so every request on the connection is balanced, retried, timed out, broken and
counted on its own: streams of one connection spread across the endpoints. The
exchange's side of the stream is an ``H2Stream``, which stands where a connection
would: what the exchange writes (an HTTP/1.1 response, relayed as the upstream framed
it, or the sidecar's own error) is parsed back and sent as HEADERS, DATA and, for a
chunked response, trailers.

Bounds: ``max_concurrent_streams`` (100) streams at once, a header list of at most the
HTTP/1.1 head's 64 KiB and 100 fields (431 otherwise), request bodies flow-controlled
(data is acknowledged as the upstream takes it, so a stream whose upstream is slow
stops its client), response data sent within the client's windows, with the upstream
paused while a stream holds more than a window's worth. A protocol error from the
client ends the connection with GOAWAY; a drain sends GOAWAY and closes once the open
streams finish; a response the exchange must cut off resets its stream (RST_STREAM),
not the connection.
"""

from __future__ import annotations

import re
from collections import deque
from typing import Any

import h2.config
import h2.connection
import h2.errors
import h2.events
import h2.exceptions
import h2.settings
import httptools
from hyperframe.frame import GoAwayFrame

from meshlet.http_limits import MAX_HEAD_BYTES, MAX_HEADERS
from meshlet.proxy.exchange import Exchange
from meshlet.proxy.grpc_status import grpc_message, grpc_timeout, is_grpc, status_for
from meshlet.proxy.h2_window import opened, send_windowed
from meshlet.proxy.headers import CHUNKED, HAS_HOST, HOP_BY_HOP, header_flags
from meshlet.proxy.http import DownstreamHttp

MAX_CONCURRENT_STREAMS = 100
BASE64URL = re.compile(rb"[A-Za-z0-9_-]*={0,2}")  # HTTP2-Settings (RFC 7540 3.2.1)
# Connection-specific headers HTTP/2 forbids (RFC 9113 8.2.2), never sent to the client.
NOT_IN_H2 = HOP_BY_HOP | {b"host"}
HIGH_WATER = 256 * 1024  # response bytes a stream buffers before its upstream pauses
RESET_LIMIT = 100  # streams a client may reset before their answer (see check_resets)
LINGER = 1.0  # seconds a cut-off connection drops what comes before it closes


def upgraded_request(method: bytes, url: bytes,
                     headers: list[tuple[bytes, bytes]]) -> list[tuple[bytes, bytes]]:
    """An ``Upgrade: h2c`` request's HTTP/1.1 head as the header list of stream 1."""
    fields = [(name.lower(), value) for name, value in headers
              if name.lower() not in NOT_IN_H2 and name.lower() != b"http2-settings"]
    host = next((v for k, v in headers if k.lower() == b"host"), b"")
    return [(b":method", method), (b":scheme", b"http"), (b":authority", host),
            (b":path", url), *fields]


class H2Stream(DownstreamHttp):
    """One request stream, standing where a client connection stands for its exchange.

    Exchanges write HTTP/1.1; this parses that back (``httptools``) into the stream's
    HEADERS, DATA and trailers."""

    def __init__(self, owner: H2Downstream, stream_id: int, is_head: bool,
                 grpc: bool = False) -> None:
        super().__init__(owner.down.listener)
        self.owner = owner
        self.stream_id = stream_id
        self.is_head = is_head
        self.grpc = grpc  # a gRPC call: the sidecar's own errors are gRPC statuses
        self.source = owner.down.source
        self.peer_ip = owner.down.peer_ip
        self.exchange: Exchange | None = None
        self.response = httptools.HttpResponseParser(self)
        self.status = 0
        self.response_headers: list[tuple[bytes, bytes]] = []
        self.trailers: list[tuple[bytes, bytes]] = []
        self.in_trailers = False
        self.head_pending: list[tuple[bytes, bytes]] | None = None  # a gRPC head held
        self.out: deque[bytes] = deque()  # response data waiting for the client's window
        self.out_size = 0
        self.ended = False  # END_STREAM sent (or the stream reset)
        self.complete = False  # the exchange's response was parsed whole
        self.paused = False  # the upstream was paused for this stream's buffer
        self.unacked = 0  # request data received but not yet given back to the window
        self.held = False  # the exchange asked for no more request data for now

    def __repr__(self) -> str:
        return f"<H2Stream {self.stream_id} status={self.status} ended={self.ended}>"

    # -- what an exchange calls on its connection -------------------------------------

    @property
    def keep_open(self) -> bool:
        return not self.owner.closed

    def write(self, data: bytes) -> None:
        if self.ended or self.complete:
            return
        try:
            self.response.feed_data(data)
        except httptools.HttpParserUpgrade:  # a 101 cannot be carried on a stream
            self.reset()
        except httptools.HttpParserError:
            self.reset()

    def cork(self) -> None:
        pass

    def uncork(self) -> None:
        self.owner.flush_soon()

    def pause_reading(self, reason: str) -> None:
        self.held = True

    def resume_reading(self, reason: str) -> None:
        if self.held:
            self.held = False
            self.give_back()

    def exchange_finished(self, ex: Any) -> None:
        self.listener.active_requests -= 1
        self.exchange = None
        if not self.complete:  # cut off before its end: the stream cannot finish
            self.reset()
        self.owner.stream_done(self)

    def close(self) -> None:
        """The exchange gives up on a response it began: reset this stream only."""
        self.reset()

    def drain(self) -> None:
        pass

    # -- the HTTP/1.1 response, parsed back (httptools callbacks) ---------------------

    def on_header(self, name: bytes, value: bytes) -> None:
        lower = name.lower()
        if lower in NOT_IN_H2:
            return
        if self.in_trailers:
            self.trailers.append((lower, value))
        else:
            self.response_headers.append((lower, value))

    def on_headers_complete(self) -> None:
        status = self.response.get_status_code()
        if 100 <= status < 200:  # interim: not passed on
            self.response_headers = []
            return
        self.status = status
        self.in_trailers = True
        made = next((v for k, v in self.response_headers if k == b"x-meshlet-error"), None)
        if self.grpc and made is not None:
            self.grpc_error(made.decode("latin-1"))
            return
        end = self.is_head or status in (204, 304)
        head = [(b":status", b"%d" % status), *self.response_headers]
        if self.grpc and not end:  # held until a message comes: trailers-only otherwise
            self.head_pending = head
            return
        self.owner.send_headers(self, head, end)
        if end:
            self.complete = True

    def grpc_error(self, reason: str) -> None:
        """The sidecar's own error as gRPC answers one: trailers only (grpc_status.py)."""
        self.complete = True
        code = status_for(reason)
        if self.exchange is not None:
            self.exchange.grpc_status = code
        self.owner.send_headers(self, [
            (b":status", b"200"), (b"content-type", b"application/grpc"),
            (b"grpc-status", b"%d" % code),
            (b"grpc-message", grpc_message(f"meshlet: {reason}")),
            (b"x-meshlet-error", reason.encode())], True)

    def on_body(self, body: bytes) -> None:
        if self.ended:
            return
        self.out.append(body)
        self.out_size += len(body)
        self.owner.send_data(self)

    def on_message_complete(self) -> None:
        if self.status == 0:  # the end of an interim response
            return
        self.complete = True
        self.owner.send_data(self)

    # -- flow control -----------------------------------------------------------------

    def give_back(self) -> None:
        """Open the client's window again for the request data the exchange took."""
        if self.unacked and not self.held and not self.ended:
            self.owner.acknowledge(self, self.unacked)
            self.unacked = 0

    def set_upstream_reading(self, on: bool) -> None:
        ex = self.exchange
        if ex is not None and ex.upstream is not None and self.paused == on:
            self.paused = not on
            ex.upstream.set_reading(on)

    def reset(self) -> None:
        if not self.ended:
            self.ended = True
            self.owner.reset(self)
            self.owner.stream_done(self)


class H2Downstream:
    """The HTTP/2 side of one client connection (``DownstreamHttp`` hands it its bytes)."""

    def __init__(self, down: DownstreamHttp, upgrade_settings: bytes | None = None) -> None:
        """``upgrade_settings``: the ``HTTP2-Settings`` of an ``Upgrade: h2c`` request
        (ValueError if not valid); then nothing is written until the caller's 101 is."""
        self.down = down
        self.listener = down.listener
        config = h2.config.H2Configuration(client_side=False, header_encoding=None,
                                           validate_inbound_headers=True,
                                           validate_outbound_headers=False)
        self.conn = h2.connection.H2Connection(config)
        self.conn.local_settings = h2.settings.Settings(client=False, initial_values={
            h2.settings.SettingCodes.MAX_CONCURRENT_STREAMS: MAX_CONCURRENT_STREAMS,
            h2.settings.SettingCodes.MAX_HEADER_LIST_SIZE: MAX_HEAD_BYTES,
        })
        self.streams: dict[int, H2Stream] = {}
        self.opened = 0  # streams the client opened, and of them those it reset early
        self.reset_early = 0
        self.closed = False
        self.draining = False
        self.flush_pending = False
        if upgrade_settings is None:
            self.conn.initiate_connection()
            self.flush()
            return
        if not BASE64URL.fullmatch(upgrade_settings):  # base64 decoding would skip junk
            raise ValueError("HTTP2-Settings is not base64url")
        try:
            self.conn.initiate_upgrade_connection(upgrade_settings)
        except (h2.exceptions.ProtocolError, ValueError, TypeError) as exc:
            raise ValueError(f"bad HTTP2-Settings ({exc})") from None

    def __repr__(self) -> str:
        return f"<H2Downstream streams={len(self.streams)} closed={self.closed}>"

    # -- what the connection hands over -----------------------------------------------

    def from_client(self, data: bytes) -> None:
        if self.closed:
            return
        try:
            events = self.conn.receive_data(data)
        except h2.exceptions.ProtocolError:
            self.cut_off()  # h2 queued the GOAWAY that names the error
            return
        for event in events:
            if self.closed:
                return
            self.handle(event)
        self.flush_soon()
        self.idle_check()

    def client_eof(self) -> bool:
        return False  # HTTP/2 has no half-close of the connection: close it

    def set_upstream_reading(self, on: bool) -> None:
        """The client stopped (or resumed) reading what the sidecar writes: the upstreams
        pause, and so does reading the client's frames (a client that sends PINGs or
        SETTINGS and reads no answer makes the sidecar buffer nothing more)."""
        for stream in self.streams.values():
            stream.set_upstream_reading(on)
        if on:
            self.down.resume_reading("h2-unread")
        else:
            self.down.pause_reading("h2-unread")

    def drain(self) -> None:
        """GOAWAY: no new streams; close once the open ones finish. The frame is written
        here, not through ``h2``, whose ``close_connection`` ends the connection's state
        machine at once (the open streams could not finish)."""
        if not self.draining and not self.closed:
            self.draining = True
            self.flush()
            self.down.write(GoAwayFrame(0, last_stream_id=self.conn.highest_inbound_stream_id,
                                        error_code=0).serialize())
            self.finish_drain()

    def finish_drain(self) -> None:
        if self.draining and not self.streams and not self.closed:
            self.conn.close_connection(last_stream_id=self.conn.highest_inbound_stream_id)
            self.flush()
            self.down.close()

    def cut_off(self) -> None:
        """End the connection after the GOAWAY h2 queued: its open streams go at once,
        and what the client still sends is dropped for LINGER seconds before the socket
        closes, so the client reads the GOAWAY rather than a reset (closing a socket
        with unread bytes sends RST, which can overtake what was written)."""
        self.flush()
        self.close()
        transport = self.down.transport
        if transport is not None and transport.can_write_eof():
            transport.write_eof()
        self.listener.loop.call_later(LINGER, self.down.close)

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        for stream in list(self.streams.values()):
            stream.ended = True
            if stream.exchange is not None:
                stream.exchange.abort()
        self.streams.clear()

    # -- events -----------------------------------------------------------------------

    def handle(self, event: Any) -> None:
        if isinstance(event, h2.events.RequestReceived):
            self.request(event.stream_id, event.headers, event.stream_ended is not None)
        elif isinstance(event, h2.events.DataReceived):
            stream = self.streams.get(event.stream_id)
            if stream is None or stream.exchange is None:
                self.conn.acknowledge_received_data(event.flow_controlled_length,
                                                    event.stream_id)
                return
            stream.unacked += event.flow_controlled_length
            stream.exchange.request_body(event.data)
            stream.give_back()
            if event.stream_ended is not None and stream.exchange is not None:
                stream.exchange.request_done()
        elif isinstance(event, h2.events.StreamEnded):
            stream = self.streams.get(event.stream_id)
            if stream is not None and stream.exchange is not None \
                    and not stream.exchange.body_done:
                stream.exchange.request_done()
        elif isinstance(event, h2.events.StreamReset):
            stream = self.streams.pop(event.stream_id, None)
            if stream is not None:
                stream.ended = True
                if stream.exchange is not None:
                    stream.exchange.abort()
                    self.reset_early += 1
                    self.check_resets()
        elif isinstance(event, h2.events.WindowUpdated):
            for stream in opened(self.streams, event.stream_id):
                self.send_data(stream)
        elif isinstance(event, h2.events.ConnectionTerminated):
            self.down.close()

    def check_resets(self) -> None:
        """A client that opens streams and resets them before their answer makes the
        sidecar start upstream requests for nothing, as fast as it can send (the "rapid
        reset" attack): past RESET_LIMIT such streams, half or more of all it opened,
        the connection ends (GOAWAY ENHANCE_YOUR_CALM), as Envoy's premature-reset
        limit does."""
        if self.reset_early >= RESET_LIMIT and self.reset_early * 2 >= self.opened:
            self.listener.count(self.listener.metrics.local_replies, "h2_reset_flood")
            self.conn.close_connection(h2.errors.ErrorCodes.ENHANCE_YOUR_CALM)
            self.cut_off()

    def request(self, stream_id: int, headers: list[tuple[bytes, bytes]],
                ended: bool) -> None:
        self.opened += 1
        if self.draining:
            self.conn.reset_stream(stream_id, h2.errors.ErrorCodes.REFUSED_STREAM)
            return
        pseudo: dict[bytes, bytes] = {}
        fields: list[tuple[bytes, bytes]] = []
        size = 0
        flags = 0
        for name, value in headers:
            size += len(name) + len(value) + 4
            if name.startswith(b":"):
                pseudo[name] = value
            elif name not in HOP_BY_HOP:  # `te: trailers` and the like: this hop only
                fields.append((name, value))
                flags |= header_flags(name, value)
        method = pseudo.get(b":method", b"GET")
        content_type = next((v for k, v in fields if k == b"content-type"), b"")
        stream = H2Stream(self, stream_id, method == b"HEAD", is_grpc(content_type))
        self.streams[stream_id] = stream
        if size > MAX_HEAD_BYTES or len(fields) > MAX_HEADERS:
            self.refuse(stream, 431, "head_too_large",
                        f"a request head over {MAX_HEAD_BYTES} bytes or {MAX_HEADERS} headers")
            return
        if method == b"CONNECT":
            self.refuse(stream, 501, "upgrade_unsupported", "CONNECT is not relayed")
            return
        if not flags & HAS_HOST:
            fields.insert(0, (b"host", pseudo.get(b":authority", b"")))
            flags |= HAS_HOST
        has_length = any(name == b"content-length" for name, _ in fields)
        if not ended and not has_length:
            flags |= CHUNKED  # a body of unknown length: chunked to the HTTP/1.1 upstream
        ex = Exchange(stream, method, pseudo.get(b":path", b"/"), fields, True, "1.1",
                      flags)
        stream.exchange = ex
        if stream.grpc:  # gRPC is HTTP/2 end to end, whatever the listener's protocol
            ex.connector = self.listener.h2_connector()
        self.listener.active_requests += 1
        self.down.head_deadline = 0.0  # busy: not idle
        ex.start()
        if stream.grpc and stream.exchange is not None and ex.deadline > 0:
            deadline = grpc_timeout(next((v for k, v in fields if k == b"grpc-timeout"), b""))
            if deadline is not None and ex.cluster is not None:  # the caller's deadline
                ex.deadline = min(ex.deadline, ex.cluster.clock() + deadline)
        if ended and stream.exchange is not None:
            ex.request_done()

    def refuse(self, stream: H2Stream, status: int, reason: str, detail: str) -> None:
        self.listener.count(self.listener.metrics.local_replies, reason)
        if stream.grpc:
            stream.grpc_error(reason)
            stream.ended = True
            self.stream_done(stream)
            return
        body = f"{reason}: {detail}\n".encode()
        self.conn.send_headers(stream.stream_id, [
            (b":status", b"%d" % status), (b"content-type", b"text/plain"),
            (b"content-length", b"%d" % len(body)), (b"x-meshlet-error", reason.encode())])
        self.conn.send_data(stream.stream_id, body, end_stream=True)
        stream.ended = stream.complete = True
        self.stream_done(stream)

    # -- what streams call ------------------------------------------------------------

    def send_headers(self, stream: H2Stream, headers: list[tuple[bytes, bytes]],
                     end: bool) -> None:
        if self.closed or stream.ended:
            return
        try:
            self.conn.send_headers(stream.stream_id, headers, end_stream=end)
        except h2.exceptions.ProtocolError:
            stream.reset()
            return
        if end:
            stream.ended = True
        self.flush_soon()

    def send_data(self, stream: H2Stream) -> None:
        """Send what the stream holds, as far as the client's windows allow; then its
        trailers and END_STREAM once the response is complete."""
        if self.closed or stream.ended:
            return
        conn, sid = self.conn, stream.stream_id
        try:
            head = stream.head_pending
            if head is not None and (stream.out or stream.complete):
                stream.head_pending = None
                if not stream.out and stream.complete:  # no message: trailers-only
                    head += stream.trailers
                    stream.trailers = []
                conn.send_headers(sid, head, end_stream=stream.complete and not stream.out)
                if stream.complete and not stream.out:
                    stream.ended = True
                    self.stream_done(stream)
            if stream.out and not stream.ended:
                stream.out_size -= send_windowed(conn, sid, stream.out, False)
            if not stream.out and stream.complete and not stream.ended:
                if stream.trailers:
                    conn.send_headers(sid, stream.trailers, end_stream=True)
                else:
                    conn.end_stream(sid)
                stream.ended = True
                self.stream_done(stream)
        except h2.exceptions.StreamClosedError:
            stream.ended = True
        except h2.exceptions.ProtocolError:
            stream.reset()
        stream.set_upstream_reading(stream.out_size < HIGH_WATER)
        self.flush_soon()

    def acknowledge(self, stream: H2Stream, size: int) -> None:
        if not self.closed:
            try:
                self.conn.acknowledge_received_data(size, stream.stream_id)
            except h2.exceptions.StreamClosedError:
                pass
            self.flush_soon()

    def reset(self, stream: H2Stream) -> None:
        if not self.closed:
            try:
                self.conn.reset_stream(stream.stream_id, h2.errors.ErrorCodes.INTERNAL_ERROR)
            except h2.exceptions.StreamClosedError:
                pass
            self.flush_soon()

    def stream_done(self, stream: H2Stream) -> None:
        """Forget a stream whose exchange finished and whose END_STREAM (or reset) went."""
        if stream.exchange is None and stream.ended:
            self.streams.pop(stream.stream_id, None)
        self.idle_check()
        self.finish_drain()

    def idle_check(self) -> None:
        """No stream open: the connection's idle time runs (the listener's sweep)."""
        if not self.streams and not self.closed:
            self.down.head_deadline = self.listener.now + self.listener.idle_timeout

    def flush(self) -> None:
        data = self.conn.data_to_send()
        if data:
            self.down.write(data)

    def flush_soon(self) -> None:
        """Write what h2 holds once this turn of the loop is done: every frame the
        events of one read made goes out in one send, not one each."""
        if not self.flush_pending:
            self.flush_pending = True
            self.listener.loop.call_soon(self.flush_later)

    def flush_later(self) -> None:
        self.flush_pending = False
        if not self.closed:
            self.flush()

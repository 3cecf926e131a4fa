"""HTTP/2 to the upstream: h2c to the local app, h2 by ALPN over the mesh's mutual TLS.

A listener whose protocol is ``http2`` or ``grpc`` speaks HTTP/2 to its endpoints (a
gRPC server speaks nothing else). Its connector is an ``H2Connector``: it keeps, per
endpoint, ``H2Session`` connections (``h2`` keeps the protocol's state), each carrying
up to its server's ``max_concurrent_streams`` (at most 100) requests at once.

The rest of the sidecar sees no difference. The cluster's pool still hands each request
a "connection", an ``H2Channel``: it stands where an ``UpstreamHttp`` stands for an
exchange, but is a lease on one stream at a time of a shared session. What the exchange
sends (the HTTP/1.1 request it builds, chunked when the body's length is unknown) is
parsed back (``httptools``) into HEADERS and DATA; the response's HEADERS, DATA and
trailers go to the exchange as an HTTP/1.1 response would, the trailers closing a
chunked body (which an ``H2Stream`` client side turns back into HTTP/2 trailers, so a
gRPC status arrives where gRPC puts it). A released channel is kept idle by the pool
like a connection, and its next request is a new stream on the same session; the
pool's ``max_connections`` thus bounds the streams (open and idle) to each cluster.

Flow control both ways: response data is acknowledged as the client takes it (a
stream whose client stops reading stops its server), request data is sent within the
server's windows, the client paused while a stream holds more than HIGH_WATER. A
trailers-only response whose ``grpc-status`` is in ``retry_on`` is retried, as a 503
would be. A session that fails (connection lost, protocol error) fails its streams'
requests as a lost connection does; a GOAWAY lets the streams it covers finish, and
those it refused (above its last stream id, or reset REFUSED_STREAM) are retried at
once on another session: the server did not process them.
"""

from __future__ import annotations

import asyncio
from collections import deque
from http import HTTPStatus
from typing import TYPE_CHECKING, Any, cast

import h2.config
import h2.connection
import h2.errors
import h2.events
import h2.exceptions
import h2.settings
import httptools

from meshlet.http_limits import MAX_HEAD_BYTES
from meshlet.proxy.connector import Connector
from meshlet.proxy.grpc_status import is_grpc
from meshlet.proxy.h2_window import opened, send_windowed
from meshlet.proxy.headers import HOP_BY_HOP, header_flags
from meshlet.proxy.upstream import UpstreamHttp

if TYPE_CHECKING:
    import ssl

    from meshlet.proxy.config import Endpoint
    from meshlet.proxy.exchange import Exchange
    from meshlet.proxy.pool import ConnectionPool

H2_PROTOCOLS = frozenset({"http2", "grpc"})  # the listener protocols spoken in HTTP/2
MAX_STREAMS = 100  # per session, whatever more a server allows
STREAM_WINDOW = 1024 * 1024  # what a server may send a stream before it is acknowledged
SESSION_WINDOW = 16 * 1024 * 1024
HIGH_WATER = 256 * 1024  # request bytes a stream buffers before its client pauses
NOT_FORWARDED = HOP_BY_HOP | {b"host", b"http2-settings"}
REASONS = {status.value: status.phrase.encode() for status in HTTPStatus}


class H2Channel(UpstreamHttp):
    """One exchange's stream on a session, kept by the pool as a connection is."""

    def __init__(self, pool: ConnectionPool, key: tuple[str, int],
                 connector: H2Connector) -> None:
        super().__init__(pool, key, connector)
        self.send = self.take_request
        self.loop = connector.loop
        self.session: H2Session | None = None
        self.request = httptools.HttpRequestParser(self)
        self.new_stream()

    def __repr__(self) -> str:
        return (f"<H2Channel {self.key} stream={self.stream_id} "
                f"busy={self.exchange is not None} closed={self.closed}>")

    def new_stream(self) -> None:
        """Forget the last request's stream: the next bytes begin another."""
        self.stream_id = 0
        self.url = b""
        self.fields: list[tuple[bytes, bytes]] = []
        self.request_head: list[tuple[bytes, bytes]] | None = None  # until HEADERS go
        self.out: deque[bytes] = deque()  # request data waiting for the server's window
        self.out_size = 0
        self.request_ended = False  # the exchange's request was parsed whole
        self.end_sent = False
        self.reading = True
        self.unacked = 0  # response data the client has not taken yet
        self.held = False  # the client was paused for this stream's buffer

    @property
    def usable(self) -> bool:
        session = self.session
        return (not self.closed and self.exchange is None and session is not None
                and session.live)

    # -- what the exchange calls ------------------------------------------------------

    def take_request(self, data: bytes) -> None:
        """The exchange's HTTP/1.1 request bytes (its ``send``), parsed into the stream."""
        if self.closed:
            return
        try:
            self.request.feed_data(data)
        except httptools.HttpParserError:
            self.close()
            return
        if self.session is not None:
            self.session.pump(self)

    def set_reading(self, on: bool) -> None:
        self.reading = on
        if on and self.unacked and self.session is not None:
            self.session.acknowledge(self, self.unacked)
            self.unacked = 0

    def relay(self, ex: Any, data: bytes) -> None:
        raise RuntimeError("an HTTP/2 stream is never relayed as HTTP/1.1 bytes")

    def close(self) -> None:
        """Give the stream up (reset if open) and the lease with it: the slot is given
        back as a closed connection's is, on the next turn of the loop."""
        if self.closed:
            return
        self.closed = True
        session, self.session = self.session, None
        if session is not None:
            session.unbind(self)
        self.loop.call_soon(self.connector.lost, self)

    # -- the exchange's request, parsed back (httptools callbacks) --------------------

    def on_message_begin(self) -> None:
        if self.stream_id and self.session is not None:  # the last one never finished
            self.session.cancel(self)
        self.new_stream()

    def on_url(self, url: bytes) -> None:
        self.url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        self.fields.append((name.lower(), value))

    def on_headers_complete(self) -> None:
        method = self.request.get_method()
        authority = b""
        head = [(b":method", method), (b":scheme", self.scheme()), (b":authority", b""),
                (b":path", self.url or b"/")]
        grpc = False
        for name, value in self.fields:
            if name == b"host":
                authority = value
            elif name not in NOT_FORWARDED:
                head.append((name, value))
                if name == b"content-type":
                    grpc = is_grpc(value)
        head[2] = (b":authority", authority or self.key[0].encode())
        if grpc:
            head.append((b"te", b"trailers"))  # a gRPC server requires it
        self.request_head = head
        self.fields = []

    def on_body(self, body: bytes) -> None:
        self.out.append(body)
        self.out_size += len(body)

    def on_message_complete(self) -> None:
        self.request_ended = True

    def scheme(self) -> bytes:
        return b"https" if self.connector.tls is not None else b"http"

    # -- what the session hands over --------------------------------------------------

    def on_response(self, headers: list[tuple[bytes, bytes]], ended: bool) -> None:
        ex = self.exchange
        if ex is None:
            return
        ex.got_response_bytes = True
        status = 0
        fields: list[tuple[bytes, bytes]] = []
        flags = 0
        grpc_code: int | None = None
        for name, value in headers:
            if name == b":status":
                status = int(value)
            elif not name.startswith(b":"):
                fields.append((name, value))
                flags |= header_flags(name, value)
                if name == b"grpc-status" and value.isdigit():
                    grpc_code = int(value)
        if ended:
            self.stream_done()
        if ended and grpc_code is not None:  # trailers-only: the call's status
            ex.grpc_status = grpc_code
            if ex.should_retry_grpc(grpc_code):
                ex.discarding = True
                ex.status = 503  # an attempt that failed, to the endpoint's books
                ex.response_done(self.keep())
                return
            # Trailers-only is status, content-type and trailers (the gRPC HTTP/2 spec):
            # a head and a chunked body's trailers carry it to either kind of client.
            trailers = [(n, v) for n, v in fields if n != b"content-type"]
            fields = [(n, v) for n, v in fields if n == b"content-type"]
            ex.response_head(status, REASONS.get(status, b""), fields, flags)
            ex.response_trailers(trailers, self.keep())
            return
        ex.response_head(status, REASONS.get(status, b""), fields, flags)
        if ended and self.exchange is ex:
            ex.response_done(self.keep())

    def on_data(self, data: bytes, flow_controlled: int) -> None:
        ex = self.exchange
        if ex is not None:
            ex.response_body(data)
        if self.reading and self.session is not None:
            self.session.acknowledge(self, flow_controlled)
        else:
            self.unacked += flow_controlled

    def on_end(self, trailers: list[tuple[bytes, bytes]] | None) -> None:
        ex = self.exchange
        self.stream_done()
        if ex is None:
            return
        if trailers:
            code = next((v for n, v in trailers if n == b"grpc-status"), b"")
            if code.isdigit():
                ex.grpc_status = int(code)
            ex.response_trailers(trailers, self.keep())
        else:
            ex.response_done(self.keep())

    def on_reset(self, refused: bool) -> None:
        """The stream was reset, or its session failed or went away without it: a
        refused stream was not processed, which the exchange retries at once (as a
        request on a stale connection)."""
        if self.closed:
            return
        self.reused = self.reused or refused
        self.closed = True
        self.session = None
        self.loop.call_soon(self.connector.lost, self)

    def stream_done(self) -> None:
        """The response ended: the stream leaves its session before the exchange hears,
        so the channel can carry the next request at once."""
        if self.session is not None:
            self.session.stream_closed(self)
        if not self.request_ended:  # the server answered before the request's end
            self.end_sent = True
        self.stream_id = 0

    def keep(self) -> bool:
        return self.session is not None and self.session.live


class H2Session:
    """One HTTP/2 client connection to an endpoint (an asyncio protocol)."""

    def __init__(self, connector: H2Connector, key: tuple[str, int]) -> None:
        self.connector = connector
        self.key = key
        # What it sends was checked as it came in (httptools, h2): checked once.
        config = h2.config.H2Configuration(client_side=True, header_encoding=None,
                                           validate_inbound_headers=True,
                                           validate_outbound_headers=False)
        self.conn = h2.connection.H2Connection(config)
        self.channels: set[H2Channel] = set()  # bound: busy or idle in the pool
        self.streams: dict[int, H2Channel] = {}
        self.queued: deque[H2Channel] = deque()  # waiting for the server's stream limit
        self.transport: asyncio.Transport | None = None
        self.opening: asyncio.Task[str] | None = None
        self.joining = 0  # channels waiting for it to open, to be bound
        self.closed = False
        self.going_away = False
        self.write_paused = False
        self.flush_pending = False

    def __repr__(self) -> str:
        return (f"<H2Session {self.key} channels={len(self.channels)} "
                f"streams={len(self.streams)} live={self.live}>")

    @property
    def live(self) -> bool:
        return not self.closed and not self.going_away

    def has_room(self) -> bool:
        limit = min(self.conn.remote_settings.max_concurrent_streams, MAX_STREAMS)
        return self.live and len(self.channels) + self.joining < limit

    # -- asyncio protocol -------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.conn.local_settings = h2.settings.Settings(client=True, initial_values={
            h2.settings.SettingCodes.ENABLE_PUSH: 0,
            h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: STREAM_WINDOW,
            h2.settings.SettingCodes.MAX_HEADER_LIST_SIZE: MAX_HEAD_BYTES,
        })
        self.conn.initiate_connection()
        self.conn.increment_flow_control_window(SESSION_WINDOW - 65535)
        self.flush()

    def connection_lost(self, exc: Exception | None) -> None:
        self.fail()

    def eof_received(self) -> None:
        return None

    def pause_writing(self) -> None:
        self.write_paused = True
        for channel in list(self.streams.values()):
            if channel.exchange is not None:
                channel.exchange.down.pause_reading("upstream_buffer")

    def resume_writing(self) -> None:
        self.write_paused = False
        for channel in list(self.streams.values()):
            if channel.exchange is not None:
                channel.exchange.down.resume_reading("upstream_buffer")

    def data_received(self, data: bytes) -> None:
        if self.closed:
            return
        try:
            events = self.conn.receive_data(data)
        except h2.exceptions.ProtocolError:
            self.flush()  # the GOAWAY h2 queued
            self.fail()
            return
        for event in events:
            if self.closed:
                return
            self.handle(event)
        self.flush_soon()

    def handle(self, event: Any) -> None:
        if isinstance(event, h2.events.ResponseReceived):
            channel = self.streams.get(event.stream_id)
            if channel is not None:
                channel.on_response(event.headers, event.stream_ended is not None)
        elif isinstance(event, h2.events.DataReceived):
            channel = self.streams.get(event.stream_id)
            if channel is None:
                self.acknowledge_stream(event.stream_id, event.flow_controlled_length)
            else:
                channel.on_data(event.data, event.flow_controlled_length)
        elif isinstance(event, h2.events.TrailersReceived):
            channel = self.streams.get(event.stream_id)
            if channel is not None:
                channel.on_end(event.headers)
        elif isinstance(event, h2.events.StreamEnded):
            channel = self.streams.get(event.stream_id)
            if channel is not None:
                channel.on_end(None)
        elif isinstance(event, h2.events.StreamReset):
            channel = self.streams.pop(event.stream_id, None)
            if channel is not None:
                self.channels.discard(channel)
                channel.on_reset(event.error_code == h2.errors.ErrorCodes.REFUSED_STREAM)
                self.start_queued()
        elif isinstance(event, h2.events.WindowUpdated):
            for channel in opened(self.streams, event.stream_id):
                self.pump(channel)
        elif isinstance(event, h2.events.RemoteSettingsChanged):
            self.start_queued()
        elif isinstance(event, h2.events.ConnectionTerminated):
            self.go_away(event.last_stream_id or 0)

    # -- streams ----------------------------------------------------------------------

    def bind(self, channel: H2Channel) -> None:
        channel.session = self
        self.channels.add(channel)

    def unbind(self, channel: H2Channel) -> None:
        """A channel is closed: its open stream is reset; a session no channel holds
        any more closes."""
        self.channels.discard(channel)
        if channel.stream_id:
            self.cancel(channel)
        try:
            self.queued.remove(channel)
        except ValueError:
            pass
        if not self.channels:
            self.close()

    def pump(self, channel: H2Channel) -> None:
        """Send what the channel's request holds: HEADERS once the stream may open, then
        data within the server's windows, and END_STREAM after the last of it."""
        if self.closed or channel.end_sent:
            return
        conn = self.conn
        try:
            if not channel.stream_id:
                if channel.request_head is None:
                    return
                if len(self.streams) >= min(conn.remote_settings.max_concurrent_streams,
                                            MAX_STREAMS):
                    if channel not in self.queued:
                        self.queued.append(channel)
                    return
                channel.stream_id = sid = conn.get_next_available_stream_id()
                self.streams[sid] = channel
                end = channel.request_ended and not channel.out
                conn.send_headers(sid, channel.request_head, end_stream=end)
                channel.request_head = None
                channel.end_sent = end
            sid = channel.stream_id
            if channel.out:
                channel.out_size -= send_windowed(conn, sid, channel.out, channel.request_ended)
                channel.end_sent = channel.request_ended and not channel.out
            if not channel.out and channel.request_ended and not channel.end_sent:
                conn.end_stream(sid)
                channel.end_sent = True
        except (h2.exceptions.StreamClosedError, h2.exceptions.ProtocolError):
            channel.out.clear()
            channel.out_size = 0
            channel.end_sent = True
        self.hold(channel)
        self.flush_soon()

    def hold(self, channel: H2Channel) -> None:
        """Pause the client of a stream that holds more than HIGH_WATER, resume it after."""
        ex: Exchange | None = channel.exchange
        held = channel.out_size > HIGH_WATER
        if ex is not None and held != channel.held:
            channel.held = held
            if held:
                ex.down.pause_reading("h2_window")
            else:
                ex.down.resume_reading("h2_window")

    def start_queued(self) -> None:
        while self.queued and len(self.streams) < min(
                self.conn.remote_settings.max_concurrent_streams, MAX_STREAMS):
            self.pump(self.queued.popleft())

    def stream_closed(self, channel: H2Channel) -> None:
        self.streams.pop(channel.stream_id, None)
        if not channel.request_ended and not self.closed:  # answered early: stop sending
            try:
                self.conn.reset_stream(channel.stream_id, h2.errors.ErrorCodes.NO_ERROR)
            except (h2.exceptions.StreamClosedError, h2.exceptions.ProtocolError):
                pass
        self.start_queued()
        if self.going_away and not self.streams:
            self.close()

    def cancel(self, channel: H2Channel) -> None:
        """Reset the channel's open stream (its request was given up)."""
        sid = channel.stream_id
        channel.stream_id = 0
        if self.streams.pop(sid, None) is not None and not self.closed:
            try:
                self.conn.reset_stream(sid, h2.errors.ErrorCodes.CANCEL)
            except (h2.exceptions.StreamClosedError, h2.exceptions.ProtocolError):
                pass
            self.flush_soon()
            self.start_queued()

    def acknowledge(self, channel: H2Channel, size: int) -> None:
        if channel.stream_id:
            self.acknowledge_stream(channel.stream_id, size)
            self.flush_soon()

    def acknowledge_stream(self, stream_id: int, size: int) -> None:
        if not self.closed:
            try:
                self.conn.acknowledge_received_data(size, stream_id)
            except (h2.exceptions.StreamClosedError, h2.exceptions.ProtocolError):
                pass

    # -- the session's end ------------------------------------------------------------

    def go_away(self, last_stream_id: int) -> None:
        """GOAWAY: no new streams here. Streams up to ``last_stream_id`` finish; those
        above it, and requests not yet on a stream, were refused; idle channels close."""
        self.going_away = True
        self.connector.forget(self)
        self.queued.clear()
        for channel in list(self.channels):
            sid = channel.stream_id
            if sid and sid <= last_stream_id and sid in self.streams:
                continue
            if channel.exchange is None:
                channel.close()
                continue
            self.streams.pop(sid, None)
            self.channels.discard(channel)
            channel.on_reset(True)
        if not self.streams:
            self.close()

    def fail(self) -> None:
        """The connection is gone: every channel on it is lost."""
        was_closed = self.closed
        self.closed = True
        self.connector.forget(self)
        channels = list(self.channels)
        self.channels.clear()
        self.streams.clear()
        self.queued.clear()
        for channel in channels:
            channel.on_reset(False)
        if not was_closed and self.transport is not None:
            self.transport.close()

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        self.connector.forget(self)
        try:
            self.conn.close_connection()
        except h2.exceptions.ProtocolError:
            pass
        self.flush(force=True)
        if self.transport is not None:
            self.transport.close()

    def flush_soon(self) -> None:
        """Write what h2 holds once this turn of the loop is done (one send for all the
        frames of one read's events, as ``H2Downstream.flush_soon``)."""
        if not self.flush_pending:
            self.flush_pending = True
            self.connector.loop.call_soon(self.flush_later)

    def flush_later(self) -> None:
        self.flush_pending = False
        self.flush()

    def flush(self, force: bool = False) -> None:
        data = self.conn.data_to_send()
        if data and self.transport is not None and (force or not self.closed):
            self.transport.write(data)


class H2Connector(Connector):
    """A listener's connector for HTTP/2 endpoints: sessions per endpoint, shared."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        super().__init__(loop)
        self.sessions: dict[tuple[str, int], list[H2Session]] = {}

    def client_context(self) -> ssl.SSLContext:
        return cast("ssl.SSLContext", self.tls.client_h2)

    def upstream(self, pool: ConnectionPool, key: tuple[str, int]) -> H2Channel:
        return H2Channel(pool, key, self)

    async def open(self, conn: UpstreamHttp, endpoint: Endpoint, timeout: float) -> str:
        """Bind ``conn`` to a session with room for one more stream, opening one if none
        has: "" or why not. Requests that come while a session opens wait for it."""
        assert isinstance(conn, H2Channel)
        session = self.session_for(conn.key, endpoint, timeout)
        assert session.opening is not None
        session.joining += 1
        try:
            reason = await asyncio.shield(session.opening)
        except asyncio.CancelledError:
            self.failed(conn)
            raise
        finally:
            session.joining -= 1
        if not reason and not session.live:
            reason = "upstream_reset"
        if reason:
            self.failed(conn)
            return reason
        session.bind(conn)
        return ""

    def session_for(self, key: tuple[str, int], endpoint: Endpoint,
                    timeout: float) -> H2Session:
        for session in self.sessions.get(key, ()):
            if session.has_room():
                return session
        session = H2Session(self, key)
        self.sessions.setdefault(key, []).append(session)
        session.opening = self.loop.create_task(self.dial_session(session, endpoint, timeout))
        return session

    async def dial_session(self, session: H2Session, endpoint: Endpoint,
                           timeout: float) -> str:
        reason = await self.dial(session, endpoint, timeout)
        if not reason and self.tls is not None:
            ssl_object = session.transport.get_extra_info("ssl_object") \
                if session.transport is not None else None
            if ssl_object is None or ssl_object.selected_alpn_protocol() != "h2":
                reason = "h2_unsupported"  # the peer would not speak HTTP/2
                session.fail()
        if reason:
            self.forget(session)
        return reason

    def forget(self, session: H2Session) -> None:
        """``session`` takes no new streams: later requests open another."""
        sessions = self.sessions.get(session.key)
        if sessions is not None and session in sessions:
            sessions.remove(session)
            if not sessions:
                del self.sessions[session.key]

    def release(self, conn: UpstreamHttp, now: float) -> None:
        if not conn.usable:  # its session went away meanwhile
            conn.close()
        else:
            super().release(conn, now)

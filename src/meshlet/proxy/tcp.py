"""Plain TCP relaying: one upstream connection per downstream connection.

Connect failures are retried on another endpoint (nothing was sent yet); after that
bytes flow both ways with back-pressure, and a half-close is passed on.
"""

from __future__ import annotations

import asyncio

from meshlet.proxy.dial import dial_endpoint
from meshlet.proxy.lb import EndpointState
from meshlet.proxy.listener import ListenerState
from meshlet.proxy.mesh_tls import caller_service
from meshlet.proxy.partition import Refusal


class _Relay(asyncio.Protocol):
    """One side of a relay; ``peer`` is the other side's protocol."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.peer: _Relay | None = None
        self.closed = False
        self.unrelayed: list[bytes] = []  # what came before the peer was linked

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        if self.peer is not None and self.peer.transport is not None:
            self.peer.transport.write(data)
        else:  # a server that speaks first, before the two sides are linked
            self.unrelayed.append(data)

    def eof_received(self) -> bool | None:
        peer = self.peer
        if (peer is not None and peer.transport is not None and not peer.closed
                and peer.transport.can_write_eof()):
            peer.transport.write_eof()
            return True
        return None

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self.peer is not None and not self.peer.closed and self.peer.transport is not None:
            self.peer.transport.close()

    def pause_writing(self) -> None:
        if self.peer is not None and self.peer.transport is not None:
            self.peer.transport.pause_reading()

    def resume_writing(self) -> None:
        if self.peer is not None and self.peer.transport is not None and not self.peer.closed:
            self.peer.transport.resume_reading()


class DownstreamTcp(_Relay):
    def __init__(self, listener: ListenerState) -> None:
        super().__init__()
        self.listener = listener
        self.buffer: list[bytes] = []
        self.eof_pending = False
        self.tried: list[EndpointState] = []
        self.task: asyncio.Task[None] | None = None
        self.started = listener.loop.time()
        self.source = ""  # the caller's service, from its certificate ("": none)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        listener = self.listener
        if listener.tls is not None:
            self.source = caller_service(transport, listener.tls)
        if listener.intentions is not None and listener.denied(self.source):
            self.closed = True  # refused by an intention: never counted as open
            transport.close()
            return
        self.listener.connections.add(self)
        self.listener.active_gauge.inc()
        self.listener.active_requests += 1
        transport.pause_reading()  # type: ignore[attr-defined]
        self.task = self.listener.loop.create_task(self.connect())

    def data_received(self, data: bytes) -> None:
        if self.peer is None:  # uvloop may deliver before pause_reading takes effect
            self.buffer.append(data)
            return
        super().data_received(data)

    def eof_received(self) -> bool | None:
        if self.peer is None:  # the client finished sending before we reached upstream
            self.eof_pending = True
            return True
        return super().eof_received()

    def connection_lost(self, exc: Exception | None) -> None:
        super().connection_lost(exc)
        if self not in self.listener.connections:
            return  # refused by an intention (connection_made)
        self.listener.connections.discard(self)
        self.listener.active_gauge.dec()
        self.listener.active_requests -= 1
        if self.task is not None and not self.task.done():
            self.task.cancel()

    def drain(self) -> None:
        """TCP has no request boundary: open connections run until either side closes."""

    async def connect(self) -> None:
        cluster = self.listener.cluster
        target = cluster.resolve(None) if cluster is not None else None
        reason = "no_healthy_endpoint"
        if target is not None and not isinstance(target, Refusal):
            upstream, _, reason = await dial_endpoint(self.listener, target, self.tried,
                                                      _Relay)
            if upstream is not None:
                if self.closed:
                    upstream.transport.close()
                    return
                upstream.peer, self.peer = self, upstream
                if upstream.unrelayed:
                    self.transport.write(b"".join(upstream.unrelayed))  # type: ignore[union-attr]
                    upstream.unrelayed = []
                if self.buffer:
                    upstream.transport.write(b"".join(self.buffer))
                    self.buffer = []
                if self.eof_pending and upstream.transport.can_write_eof():
                    upstream.transport.write_eof()
                self.transport.resume_reading()  # type: ignore[union-attr]
                return
        self.listener.count(self.listener.metrics.local_replies, reason)
        if self.transport is not None:
            self.transport.close()

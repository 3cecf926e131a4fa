"""A client connection that an HTTP listener stopped parsing, relayed as bytes to an
upstream connection of its own: the common part of an upgraded connection's tunnel
(``upgrade.py``) and an opaque one (``opaque.py``).

Until the upstream is there the client's bytes wait (and its reading pauses); then they
flow both ways with back-pressure, a half-close is passed on once relaying, and both
sides close together: when either closes, or when nothing moves for the listener's
``idle_timeout`` (the listener's head sweep closes the client connection). The relay
holds its endpoint as one outstanding request while it is open.
"""

from __future__ import annotations

import asyncio
from typing import Any

from meshlet.proxy.lb import EndpointState


class UpstreamBytes(asyncio.Protocol):
    """The upstream connection of a relay."""

    def __init__(self, relay: ByteRelay) -> None:
        self.relay = relay
        self.transport: asyncio.Transport | None = None
        self.closed = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self.relay.down.write(data)
        self.relay.touch()
        self.relay.from_upstream(data)

    def eof_received(self) -> bool | None:
        relay = self.relay
        relay.upstream_done = True
        down = relay.down
        if relay.relaying and not relay.client_done and down.transport is not None \
                and not down.closed and down.transport.can_write_eof():
            down.transport.write_eof()  # a half-close, passed on
            return True
        return None

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.relay.close()

    def pause_writing(self) -> None:
        self.relay.down.pause_reading("relay")

    def resume_writing(self) -> None:
        self.relay.down.resume_reading("relay")


class ByteRelay:
    """One relayed client connection (what ``DownstreamHttp`` switched to)."""

    def __init__(self, down: Any, first: bytes = b"") -> None:
        self.down = down
        self.listener = down.listener
        self.early = [first] if first else []  # what the client sent before upstream was there
        self.tried: list[EndpointState] = []
        self.upstream: UpstreamBytes | None = None
        self.state: EndpointState | None = None
        self.closed = False
        self.client_done = False  # each side has sent its last byte (a half-close)
        self.upstream_done = False
        self.task: asyncio.Task[None] | None = None

    @property
    def relaying(self) -> bool:
        """Whether bytes now pass both ways unread (half-closes with them)."""
        return True

    def from_upstream(self, data: bytes) -> None:
        """Bytes from the upstream, after they went to the client."""

    def start(self) -> None:
        self.listener.active_requests += 1
        self.down.pause_reading("relay-connect")
        self.task = self.listener.loop.create_task(self.connect())

    async def connect(self) -> None:
        raise NotImplementedError

    def connected(self, upstream: UpstreamBytes, state: EndpointState, head: bytes) -> None:
        """The upstream is there: ``head`` and the client's waiting bytes go first."""
        self.upstream, self.state = upstream, state
        state.start()
        upstream.transport.write(head + b"".join(self.early))  # type: ignore[union-attr]
        self.early = []
        if self.client_done and self.relaying and upstream.transport.can_write_eof():  # type: ignore[union-attr]
            upstream.transport.write_eof()  # type: ignore[union-attr]
        self.down.resume_reading("relay-connect")
        self.touch()

    def from_client(self, data: bytes) -> None:
        upstream = self.upstream
        if upstream is None or upstream.transport is None:
            self.early.append(data)
            return
        upstream.transport.write(data)
        self.touch()

    def client_eof(self) -> bool:
        """The client finished sending: passed on while relaying; True keeps the
        connection half open. Once both sides have finished, the relay closes."""
        self.client_done = True
        upstream = self.upstream
        if upstream is None:
            return self.relaying  # passed on once connected
        if self.relaying and not self.upstream_done and upstream.transport is not None \
                and not upstream.closed and upstream.transport.can_write_eof():
            upstream.transport.write_eof()
            return True
        return False

    def touch(self) -> None:
        """Bytes moved: the idle time starts again (the listener's head sweep)."""
        listener = self.listener
        self.down.head_deadline = listener.now + listener.idle_timeout

    def set_upstream_reading(self, on: bool) -> None:
        upstream = self.upstream
        if upstream is not None and upstream.transport is not None and not upstream.closed:
            if on:
                upstream.transport.resume_reading()
            else:
                upstream.transport.pause_reading()

    def drain(self) -> None:
        """A relay stays open through a drain, until the sidecar's stop grace ends."""

    def failed(self, reason: str) -> None:
        """No upstream: counted, and the client connection closed."""
        self.listener.count(self.listener.metrics.local_replies, reason)
        self.close()

    def close(self) -> None:
        """Close both sides, once; give the endpoint back."""
        if self.closed:
            return
        self.closed = True
        self.listener.active_requests -= 1
        task = self.task
        if task is not None and not task.done() and task is not asyncio.current_task():
            task.cancel()
        upstream = self.upstream
        if upstream is not None and upstream.transport is not None and not upstream.closed:
            upstream.transport.close()
        state, cluster = self.state, self.listener.cluster
        if state is not None and cluster is not None:
            state.finish(None, cluster.clock())
            self.released(state, cluster)
        self.down.switched_closed()

    def released(self, state: EndpointState, cluster: Any) -> None:
        """The endpoint was given back (outlier detection may hear how it went)."""

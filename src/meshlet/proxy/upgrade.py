"""HTTP/1.1 Upgrade requests (WebSocket and the like): relayed on an upstream connection
of their own, then, after the upstream's ``101 Switching Protocols``, bytes both ways.

Envoy's ``upgrade_configs`` and Linkerd's WebSocket support are the models. The request
is checked as every request is (a route, intentions, the rate limit), its endpoint
picked by the listener's balancer, and a failed connect retried on another endpoint
(nothing was sent yet). Its head goes upstream with ``Connection: upgrade`` and
``Upgrade`` kept (the other hop-by-hop headers dropped), then whatever the client sent
after it. What the upstream answers is relayed as it comes:

- ``101``: the connection is a tunnel from then on, with back-pressure both ways, until
  either side closes or nothing moves for the listener's ``idle_timeout``;
- anything else: the upgrade did not happen; the response is relayed and the
  connection closed after it.

The request is counted once, when its answer's head arrives (status 101 for a tunnel),
and holds the endpoint as one outstanding request while the tunnel is open. The code
here is off the per-request hot path: one instance per upgraded connection.
"""

from __future__ import annotations

import asyncio
from time import perf_counter
from typing import Any

import httptools

from meshlet.proxy.dial import dial_endpoint
from meshlet.proxy.headers import HOP_BY_HOP
from meshlet.proxy.lb import EndpointState
from meshlet.proxy.partition import Refusal
from meshlet.proxy.request_view import RequestView

UPGRADE_REFUSED = "upgrade_refused"  # a pipelined or malformed upgrade request


def upgrade_head(method: bytes, url: bytes, headers: list[tuple[bytes, bytes]],
                 host: bytes, route: Any = None) -> bytes:
    """The request's head for the upstream: hop-by-hop headers dropped but the upgrade's
    own (``Connection: upgrade``, ``Upgrade``), the route's header edits made, a Host
    added if the client sent none."""
    parts = [method, b" ", url, b" HTTP/1.1\r\n"]
    drop = route.remove_headers if route is not None else frozenset()
    has_host = False
    for name, value in headers:
        lower = name.lower()
        has_host = has_host or lower == b"host"
        if (lower == b"upgrade" or lower not in HOP_BY_HOP) and lower not in drop:
            parts += (name, b": ", value, b"\r\n")
    if route is not None:
        for name, value in route.set_headers:
            parts += (name, b": ", value, b"\r\n")
    if not has_host:
        parts += (b"host: ", host, b"\r\n")
    parts.append(b"connection: upgrade\r\n\r\n")
    return b"".join(parts)


def upgrade_token(headers: list[tuple[bytes, bytes]]) -> bytes:
    """The protocol the client asks for (``Upgrade``'s first token), lowercased."""
    for name, value in headers:
        if name.lower() == b"upgrade":
            return value.split(b",")[0].strip().lower()
    return b""


def error_response(status: int, reason: str, detail: str = "") -> bytes:
    body = (f"{reason}: {detail}\n" if detail else f"{reason}\n").encode()
    return (b"HTTP/1.1 %d %b\r\ncontent-type: text/plain\r\ncontent-length: %d\r\n"
            b"x-meshlet-error: %b\r\nconnection: close\r\n\r\n%b"
            % (status, reason.encode(), len(body), reason.encode(), body))


class UpstreamSide(asyncio.Protocol):
    """The upstream connection of a tunnel; reads the answer's head, then relays."""

    def __init__(self, tunnel: Tunnel) -> None:
        self.tunnel = tunnel
        self.transport: asyncio.Transport | None = None
        self.parser: Any = httptools.HttpResponseParser(self)
        self.closed = False
        self.interim = False  # the message being parsed is a 1xx other than 101

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        tunnel = self.tunnel
        tunnel.down.write(data)
        tunnel.touch()
        if self.parser is None:
            return
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:  # the 101's head is complete: a tunnel
            self.parser = None
        except httptools.HttpParserError:
            self.parser = None
            tunnel.close()

    def on_headers_complete(self) -> None:
        status = self.parser.get_status_code()
        self.interim = 100 <= status < 200 and status != 101
        if self.interim:  # 100 Continue and the like: relayed, the answer still to come
            return
        self.tunnel.answered(status)
        if status != 101:
            self.tunnel.upgraded = False

    def on_message_complete(self) -> None:
        if not self.interim and not self.tunnel.upgraded:
            self.tunnel.close()  # the upgrade was declined: one response, then close

    def eof_received(self) -> bool | None:
        tunnel = self.tunnel
        tunnel.upstream_done = True
        down = tunnel.down
        if tunnel.status == 101 and not tunnel.client_done and down.transport is not None \
                and not down.closed and down.transport.can_write_eof():
            down.transport.write_eof()  # a half-close, passed on
            return True
        return None

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.tunnel.close()

    def pause_writing(self) -> None:
        self.tunnel.down.pause_reading("tunnel")

    def resume_writing(self) -> None:
        self.tunnel.down.resume_reading("tunnel")


class Tunnel:
    """One upgrade request and, once the upstream agrees, its tunnel. Holds what the
    listener's metrics and access log read of a request (``ListenerState.finished``)."""

    def __init__(self, down: Any, method: bytes, url: bytes,
                 headers: list[tuple[bytes, bytes]], flags: int) -> None:
        self.down = down
        self.listener = down.listener
        self.method = method
        self.url = url
        self.headers = headers
        self.flags = flags
        self.status = 0
        self.reason = ""
        self.tried: list[EndpointState] = []
        self.trace = None
        self.early: list[bytes] = []  # what the client sent before upstream was there
        self.upstream: UpstreamSide | None = None
        self.state: EndpointState | None = None
        self.upgraded = True  # until the upstream answers otherwise
        self.closed = False
        self.counted = False
        self.client_done = False  # each side has sent its last byte (a half-close)
        self.upstream_done = False
        self.start_time = perf_counter()
        self.task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self.listener.active_requests += 1
        self.down.pause_reading("tunnel-connect")
        self.task = self.listener.loop.create_task(self.connect())

    def refusal(self) -> tuple[int, str, str] | None:
        """Why the request may not go upstream (status, reason, detail), or None."""
        listener = self.listener
        cluster = listener.cluster
        if cluster is None:
            return 503, "no_route", ""
        if listener.intentions is not None:
            why = listener.denied(self.down.source, self)
            if why:
                return 403, "intention_denied", why
        limiter = listener.rate_limiter
        if limiter is not None and not limiter.take(cluster.clock()):
            return 429, "rate_limited", ""
        return None

    async def connect(self) -> None:
        refused = self.refusal()
        if refused is not None:
            self.reply(*refused)
            return
        listener = self.listener
        cluster = listener.cluster
        view = RequestView.from_raw(self.method, self.url, self.headers, self.down.peer_ip) \
            if cluster.needs_view else None
        target = cluster.resolve(view)
        if isinstance(target, Refusal):
            self.reply(target.status, target.reason, target.message)
            return
        upstream, state, reason = await dial_endpoint(listener, target, self.tried,
                                                      lambda: UpstreamSide(self))
        if self.closed:  # the client left meanwhile
            if upstream is not None:
                upstream.transport.close()
            return
        if upstream is not None and state is not None:
            self.upstream, self.state = upstream, state
            state.start()
            upstream.transport.write(
                upgrade_head(self.method, self.url, self.headers,
                             listener.destination.encode(), target.route)
                + b"".join(self.early))
            self.early = []
            self.down.resume_reading("tunnel-connect")
            self.touch()
            return
        if listener.direction == "inbound" and reason != "no_healthy_endpoint":
            reason = "local_app_refused"
        self.reply(504 if reason == "connect_timeout" else 503, reason, "")

    def from_client(self, data: bytes) -> None:
        upstream = self.upstream
        if upstream is None or upstream.transport is None:
            self.early.append(data)
            return
        upstream.transport.write(data)
        self.touch()

    def client_eof(self) -> bool:
        """The client finished sending: passed on inside a tunnel; True keeps the
        connection half open. Once both sides have finished, the tunnel closes."""
        self.client_done = True
        upstream = self.upstream
        if self.status == 101 and not self.upstream_done and upstream is not None \
                and upstream.transport is not None and not upstream.closed \
                and upstream.transport.can_write_eof():
            upstream.transport.write_eof()  # a half-close, passed on
            return True
        return False

    def touch(self) -> None:
        """Bytes moved: the idle time starts again (the listener's head sweep)."""
        listener = self.listener
        self.down.head_deadline = listener.now + listener.idle_timeout

    def answered(self, status: int) -> None:
        self.status = status
        if not self.counted:
            self.counted = True
            self.listener.finished(self, perf_counter() - self.start_time)

    def reply(self, status: int, reason: str, detail: str) -> None:
        """Answer the client with an error the sidecar made, and close."""
        self.listener.count(self.listener.metrics.local_replies, reason)
        self.reason = reason
        self.answered(status)
        self.down.write(error_response(status, reason, detail))
        self.close()

    def drain(self) -> None:
        """A tunnel stays open through a drain, until the sidecar's stop grace ends."""

    def set_upstream_reading(self, on: bool) -> None:
        upstream = self.upstream
        if upstream is not None and upstream.transport is not None and not upstream.closed:
            if on:
                upstream.transport.resume_reading()
            else:
                upstream.transport.pause_reading()

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
            if self.status >= 500 and cluster.record_outcome(state, True):
                self.listener.count_ejection()  # it refused the upgrade with a 5xx
        self.down.switched_closed()

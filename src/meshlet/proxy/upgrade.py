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

from time import perf_counter
from typing import Any

import httptools

from meshlet.proxy.byte_relay import ByteRelay, UpstreamBytes
from meshlet.proxy.dial import dial_endpoint
from meshlet.proxy.headers import HOP_BY_HOP, connection_listed
from meshlet.proxy.lb import EndpointState
from meshlet.proxy.partition import Refusal
from meshlet.proxy.request_view import RequestView


def upgrade_head(method: bytes, url: bytes, headers: list[tuple[bytes, bytes]],
                 host: bytes, route: Any = None) -> bytes:
    """The request's head for the upstream: hop-by-hop headers dropped but the upgrade's
    own (``Connection: upgrade``, ``Upgrade``) and those ``Connection`` lists, the
    route's header edits made, a Host added if the client sent none."""
    parts = [method, b" ", url, b" HTTP/1.1\r\n"]
    drop = route.remove_headers if route is not None else frozenset()
    drop = drop | (connection_listed(headers) - {b"upgrade"})
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


class Tunnel(ByteRelay):
    """One upgrade request and, once the upstream agrees, its tunnel. Holds what the
    listener's metrics and access log read of a request (``ListenerState.finished``);
    reads the upstream's answer (``httptools``) until it is a 101 or has ended."""

    def __init__(self, down: Any, method: bytes, url: bytes,
                 headers: list[tuple[bytes, bytes]], flags: int) -> None:
        super().__init__(down)
        self.method = method
        self.url = url
        self.headers = headers
        self.flags = flags
        self.status = 0
        self.reason = ""
        self.grpc_status = -1  # never a gRPC call: for the request series
        self.trace = None
        self.parser: Any = httptools.HttpResponseParser(self)
        self.interim = False  # the answer being parsed is a 1xx other than 101
        self.counted = False
        self.start_time = perf_counter()

    @property
    def relaying(self) -> bool:
        return self.status == 101

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
        target = cluster.resolve(view, self.method, self.url)
        if isinstance(target, Refusal):
            self.reply(target.status, target.reason, target.message)
            return
        upstream, state, reason = await dial_endpoint(listener, target, self.tried,
                                                      lambda: UpstreamBytes(self))
        if self.closed:  # the client left meanwhile
            if upstream is not None:
                upstream.transport.close()
            return
        if upstream is not None and state is not None:
            self.connected(upstream, state, upgrade_head(
                self.method, self.url, self.headers, listener.destination.encode(),
                target.route))
            return
        if listener.direction == "inbound" and reason != "no_healthy_endpoint":
            reason = "local_app_refused"
        self.reply(504 if reason == "connect_timeout" else 503, reason, "")

    # -- the upstream's answer (httptools callbacks) ----------------------------------

    def from_upstream(self, data: bytes) -> None:
        if self.parser is None:
            return
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:  # the 101's head is complete: a tunnel
            self.parser = None
        except httptools.HttpParserError:
            self.parser = None
            self.close()

    def on_headers_complete(self) -> None:
        status = self.parser.get_status_code()
        self.interim = 100 <= status < 200 and status != 101
        if not self.interim:  # 100 Continue and the like: relayed, the answer to come
            self.answered(status)

    def on_message_complete(self) -> None:
        if not self.interim and self.status != 101:
            self.close()  # the upgrade was declined: one response, then close

    def answered(self, status: int) -> None:
        self.status = status
        if not self.counted:
            self.counted = True
            self.listener.finished(self, perf_counter() - self.start_time)

    def reply(self, status: int, reason: str, detail: str) -> None:
        """Answer the client with an error the sidecar made, and close."""
        self.reason = reason
        self.answered(status)
        self.down.write(error_response(status, reason, detail))
        self.failed(reason)

    def released(self, state: EndpointState, cluster: Any) -> None:
        if self.status >= 500 and cluster.record_outcome(state, True):
            self.listener.count_ejection()  # it refused the upgrade with a 5xx

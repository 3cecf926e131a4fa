"""Protocol detection on an HTTP listener, and the opaque relay it falls back to.

What a client sends first says what it speaks (Linkerd's and Istio's detection): an
HTTP/1 request begins with a method (an uppercase token) or the blank lines RFC 9112
lets come before one; HTTP/2 with its preface (a method-like ``PRI``); TLS with a
handshake record (0x16). A client that sends anything else, or nothing within the
listener's ``detect_timeout`` (a server-speaks-first protocol: SMTP, MySQL), gets its
bytes relayed as they are, both ways, to an endpoint the balancer picks: per
connection, not per request. A service whose protocol is ``tcp`` never waits; declare
server-speaks-first ports so.

Opaque bytes cannot be judged per request, so a listener that enforces what only HTTP
shows (L7 intentions, a rate limit) refuses them and keeps waiting for HTTP instead:
detection must never be a way around a rule. L4 intentions apply to the connection, as
on a ``tcp`` listener. An opaque connection closes when either side does, or when
nothing moves for the listener's ``idle_timeout``; one taken for a server that speaks
first, when neither side has sent a byte within the listener's ``head_timeout`` (a server
that speaks first does so at once), so silent connections hold no upstream for long.
"""

from __future__ import annotations

from typing import Any

from meshlet.proxy.byte_relay import ByteRelay, UpstreamBytes
from meshlet.proxy.dial import dial_endpoint
from meshlet.proxy.partition import Refusal

HTTP, OPAQUE, TLS, SILENT = "http", "opaque", "tls", "silent"
HTTP_FIRST = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZ\r\n")
TLS_HANDSHAKE = 0x16


def first_bytes_kind(data: bytes) -> str:
    """What a connection's first bytes say it speaks: HTTP (1 or 2), TLS or opaque."""
    if not data or data[0] in HTTP_FIRST:
        return HTTP
    return TLS if data[0] == TLS_HANDSHAKE else OPAQUE


def opaque_allowed(listener: Any) -> bool:
    """Whether bytes that are not HTTP may pass: not where a rule needs HTTP to judge."""
    rules = listener.intentions
    return listener.rate_limiter is None and (rules is None or not rules.l7)


class OpaqueRelay(ByteRelay):
    """A client connection detected as not HTTP, relayed as bytes (see the module doc)."""

    def __init__(self, down: Any, first: bytes, kind: str) -> None:
        super().__init__(down, first)
        self.kind = kind

    async def connect(self) -> None:
        listener = self.listener
        cluster = listener.cluster
        target = cluster.resolve(None) if cluster is not None else None
        reason = "no_healthy_endpoint"
        if listener.intentions is not None and listener.denied(self.down.source):
            reason = "intention_denied"
        elif target is not None and not isinstance(target, Refusal):
            upstream, state, reason = await dial_endpoint(listener, target, self.tried,
                                                          lambda: UpstreamBytes(self))
            if self.closed:
                if upstream is not None:
                    upstream.transport.close()
                return
            if upstream is not None and state is not None:
                self.connected(upstream, state, b"")
                if self.kind == SILENT:  # a server that speaks first does so at once
                    self.down.head_deadline = listener.now + listener.head_timeout
                return
        self.failed(reason)

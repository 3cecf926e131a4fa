"""Does what a ``ConnectionPool`` decided, on one event loop: opens connections with the
connect timeout and attaches their protocol, hands released ones to waiting requests,
starts the connection a waiting request has a slot for, closes.

Nothing here decides: each method asks the pool, then performs its answer. One
connector serves a listener; the pool it acts for is the connection's own. An outbound
listener's connector speaks mutual TLS when the sidecar has a certificate (``tls``),
and accepts a destination only if it proves ``identity`` (``proxy/mesh_tls.py``).
"""

from __future__ import annotations

import asyncio
import ssl
from typing import TYPE_CHECKING, Any, cast

from meshlet.proxy import upstream as upstream_module
from meshlet.proxy.mesh_tls import peer_identity
from meshlet.proxy.pool import CLOSE, HAND_OFF, REPLACE

if TYPE_CHECKING:  # cimported by the compiled build (connector.pxd)
    from meshlet.proxy.config import Endpoint
    from meshlet.proxy.pool import ConnectionPool
    from meshlet.proxy.upstream import UpstreamHttp


class Connector:
    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.tls: Any = None  # a MeshTls: mutual TLS to every endpoint
        self.identity = ""    # the SPIFFE ID every endpoint must prove, with tls

    def __repr__(self) -> str:
        mode = f"mTLS to {self.identity}" if self.tls is not None else "plaintext"
        return f"<Connector on {type(self.loop).__name__}, {mode}>"

    async def dial(self, protocol: object, endpoint: Endpoint, timeout: float) -> str:
        """Connect ``protocol`` (an asyncio protocol by its methods) to ``endpoint``: ""
        once connected, else why not (``connect_timeout``, ``connect_refused``; with
        TLS ``tls_handshake``, or ``tls_identity`` for a peer that is not the service
        meant)."""
        protocol = cast(asyncio.BaseProtocol, protocol)
        tls = self.tls
        try:
            if tls is None:
                await asyncio.wait_for(
                    self.loop.create_connection(lambda: protocol, endpoint.address,
                                                endpoint.port),
                    timeout)
                return ""
            transport, _ = await asyncio.wait_for(
                self.loop.create_connection(
                    lambda: protocol, endpoint.address, endpoint.port,
                    ssl=self.client_context(),
                    server_hostname="", ssl_handshake_timeout=max(timeout, 0.001)),
                timeout)
        except TimeoutError:
            return "connect_timeout"
        except (ssl.SSLError, ssl.CertificateError):
            return "tls_handshake"
        except ConnectionResetError:  # refused in its handshake, or reset
            return "tls_handshake" if tls is not None else "connect_refused"
        except OSError:
            return "connect_refused"
        if peer_identity(transport) != self.identity:
            transport.close()
            return "tls_identity"
        return ""

    def client_context(self) -> ssl.SSLContext:
        """The TLS context to dial with: HTTP/1.1 by ALPN (``h2_upstream``'s offers h2)."""
        return cast(ssl.SSLContext, self.tls.client)

    def upstream(self, pool: ConnectionPool, key: tuple[str, int]) -> UpstreamHttp:
        """A new connection of ``pool`` to endpoint ``key``, not open yet."""
        return upstream_module.UpstreamHttp(pool, key, self)

    async def open(self, conn: UpstreamHttp, endpoint: Endpoint, timeout: float) -> str:
        """Open ``conn`` in the slot its pool reserved: "" or why not. A failed or
        cancelled attempt gives the slot back, which may let a waiting request open one.
        (If asyncio had made the transport, it closes it, and ``lost`` comes again: the
        pool frees the slot once.)"""
        try:
            reason = await self.dial(conn, endpoint, timeout)
        except asyncio.CancelledError:
            self.failed(conn)
            raise
        if reason:
            self.failed(conn)
        return reason

    def failed(self, conn: UpstreamHttp) -> None:
        """Opening ``conn`` failed or was given up: its slot is free again."""
        conn.closed = True
        waiter: Any = conn.pool.lost(conn, False)
        if waiter is not None:
            waiter.start_connect()

    def lost(self, conn: UpstreamHttp) -> None:
        """``conn`` closed. Its slot is given back before its exchange, if any, is told,
        so that a retry of that request finds the room it left; a waiting request given
        the slot starts its connection last."""
        ex = conn.exchange
        conn.exchange = None
        waiter: Any = conn.pool.lost(conn, ex is None)
        if ex is not None:
            ex.upstream_lost(conn)
        if waiter is not None:
            waiter.start_connect()

    def release(self, conn: UpstreamHttp, now: float) -> None:
        """An exchange is done with ``conn`` and it can serve another request."""
        action, waiter = conn.pool.release(conn, now)
        if action == HAND_OFF:
            waiter.attach(conn)
        elif action == CLOSE:
            conn.close()
        elif action == REPLACE:  # its endpoint is gone or resting: the waiter opens one
            conn.close()
            waiter.start_connect()

"""Does what a ``ConnectionPool`` decided, on one event loop: opens connections with the
connect timeout and attaches their protocol, hands released ones to waiting requests,
starts the connection a waiting request has a slot for, closes.

Nothing here decides: each method asks the pool, then performs its answer. One
connector serves a listener; the pool it acts for is the connection's own.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any, cast

from meshlet.proxy import upstream as upstream_module
from meshlet.proxy.pool import CLOSE, HAND_OFF, REPLACE

if TYPE_CHECKING:  # cimported by the compiled build (connector.pxd)
    from meshlet.proxy.config import Endpoint
    from meshlet.proxy.pool import ConnectionPool
    from meshlet.proxy.upstream import UpstreamHttp


class Connector:
    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop

    def __repr__(self) -> str:
        return f"<Connector on {type(self.loop).__name__}>"

    async def dial(self, protocol: object, endpoint: Endpoint, timeout: float) -> str:
        """Connect ``protocol`` (an asyncio protocol by its methods) to ``endpoint``: ""
        once connected, else why not (``connect_timeout``, ``connect_refused``)."""
        protocol = cast(asyncio.BaseProtocol, protocol)
        try:
            await asyncio.wait_for(
                self.loop.create_connection(lambda: protocol, endpoint.address,
                                            endpoint.port),
                timeout)
        except TimeoutError:
            return "connect_timeout"
        except OSError:
            return "connect_refused"
        return ""

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

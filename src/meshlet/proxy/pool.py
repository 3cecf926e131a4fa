"""Idle upstream connections per endpoint, reused across requests (keep-alive)."""

from __future__ import annotations

from typing import Protocol

from meshlet.proxy.config import Endpoint

MAX_IDLE_PER_ENDPOINT = 64


class PooledConnection(Protocol):
    @property
    def usable(self) -> bool: ...

    def close(self) -> None: ...


class EndpointPool:
    __slots__ = ("closed", "endpoint", "idle")

    def __init__(self, endpoint: Endpoint) -> None:
        self.endpoint = endpoint
        self.idle: list[PooledConnection] = []
        self.closed = False

    def __repr__(self) -> str:
        return f"<EndpointPool {self.endpoint.address}:{self.endpoint.port} idle={len(self.idle)}>"

    def take(self) -> PooledConnection | None:
        idle = self.idle
        while idle:
            conn = idle.pop()
            if conn.usable:
                return conn
        return None

    def give(self, conn: PooledConnection) -> None:
        """Keep ``conn`` for reuse, or close it if the pool is closed or full."""
        if self.closed or len(self.idle) >= MAX_IDLE_PER_ENDPOINT:
            conn.close()
        else:
            self.idle.append(conn)

    def discard(self, conn: PooledConnection) -> None:
        try:
            self.idle.remove(conn)
        except ValueError:
            pass

    def close(self) -> None:
        """Close idle connections; busy ones close when they are given back."""
        self.closed = True
        idle, self.idle = self.idle, []
        for conn in idle:
            conn.close()

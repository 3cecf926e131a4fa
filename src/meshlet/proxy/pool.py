"""Idle upstream connections per endpoint, reused across requests (keep-alive)."""

from __future__ import annotations

from typing import Protocol

from meshlet.proxy.config import Endpoint

MAX_IDLE_PER_ENDPOINT = 64


class PooledConnection(Protocol):
    idle_since: float

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

    def give(self, conn: PooledConnection, now: float) -> bool:
        """Keep ``conn`` for reuse; False (and closed) if the pool is closed or full."""
        if self.closed or len(self.idle) >= MAX_IDLE_PER_ENDPOINT:
            conn.close()
            return False
        conn.idle_since = now
        self.idle.append(conn)
        return True

    def discard(self, conn: PooledConnection) -> None:
        try:
            self.idle.remove(conn)
        except ValueError:
            pass

    def close_idle_before(self, cutoff: float) -> None:
        """Close connections idle since before ``cutoff`` (the idle timeout)."""
        stale = [c for c in self.idle if c.idle_since < cutoff]
        if stale:
            self.idle = [c for c in self.idle if c.idle_since >= cutoff]
            for conn in stale:
                conn.close()

    def close(self) -> None:
        """Close idle connections; busy ones close when they are given back."""
        self.closed = True
        idle, self.idle = self.idle, []
        for conn in idle:
            conn.close()

"""What every connection on one listener shares: its cluster, metrics and drain state."""

from __future__ import annotations

import asyncio
from typing import Any

from meshlet.observe.proxy_metrics import ProxyMetrics
from meshlet.proxy.cluster import Cluster
from meshlet.proxy.config import ListenerConfig


class ListenerState:
    def __init__(self, config: ListenerConfig, cluster: Cluster | None, metrics: ProxyMetrics,
                 loop: asyncio.AbstractEventLoop) -> None:
        self.config = config
        self.direction = config.direction
        self.destination = config.name
        self.cluster = cluster
        self.metrics = metrics
        self.loop = loop
        self.connections: set[Any] = set()
        self.active_requests = 0
        self.draining = False
        self.server: asyncio.AbstractServer | None = None
        self.port = config.port
        self.active_gauge = metrics.active_connections.labels(config.direction, config.name)

    def __repr__(self) -> str:
        return (f"<Listener {self.direction} {self.destination} :{self.port} "
                f"conns={len(self.connections)} active={self.active_requests}>")

    def count(self, what: Any, reason: str) -> None:
        what.labels(self.direction, self.destination, reason).inc()

    def drain(self) -> None:
        """Stop accepting; close idle connections; busy ones close after their response."""
        self.draining = True
        if self.server is not None:
            self.server.close()
        for conn in list(self.connections):
            conn.drain()

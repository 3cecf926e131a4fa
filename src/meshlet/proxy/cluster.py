"""One upstream service at run time: its balancer, settings and connection pools."""

from __future__ import annotations

from collections.abc import Collection
from typing import Any

from meshlet.proxy.config import ClusterConfig, Endpoint
from meshlet.proxy.lb import Balancer, make_balancer
from meshlet.proxy.pool import EndpointPool
from meshlet.state.config_entry import effective, validate_settings


class Cluster:
    def __init__(self, config: ClusterConfig) -> None:
        self.name = config.name
        self.config = config
        self.pools: dict[tuple[str, int], EndpointPool] = {}
        self.settings: dict[str, Any] = {}
        self.balancer: Balancer = make_balancer(
            effective(validate_settings(config.settings))["lb"])
        self.update(config)

    def __repr__(self) -> str:
        return f"<Cluster {self.name} endpoints={len(self.config.endpoints)} {self.balancer!r}>"

    def update(self, config: ClusterConfig) -> None:
        """Swap in a new endpoint set and settings; connections in use are untouched."""
        settings = effective(validate_settings(config.settings))
        if settings["lb"] != self.settings.get("lb", settings["lb"]):
            self.balancer = make_balancer(settings["lb"])
        self.config = config
        self.settings = settings
        self.connect_timeout: float = settings["connect_timeout"]
        self.request_timeout: float = settings["request_timeout"]
        self.retries: int = settings["retries"]
        self.balancer.reset(config.endpoints)
        current = {e.key for e in config.endpoints}
        for key in list(self.pools):
            if key not in current:
                self.pools.pop(key).close()

    def pick(self, exclude: Collection[Endpoint] = ()) -> Endpoint | None:
        return self.balancer.pick(exclude)

    def pool(self, endpoint: Endpoint) -> EndpointPool:
        pool = self.pools.get(endpoint.key)
        if pool is None:
            pool = self.pools[endpoint.key] = EndpointPool(endpoint)
            if endpoint.key not in {e.key for e in self.config.endpoints}:
                pool.closed = True  # endpoint already removed: do not keep its connections
        return pool

    def close(self) -> None:
        for pool in self.pools.values():
            pool.close()
        self.pools.clear()

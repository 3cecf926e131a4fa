"""The sidecar's configuration snapshot: what the agent pushes, what ``/config`` shows."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from meshlet.errors import ConfigError
from meshlet.http_limits import HEAD_TIMEOUT
from meshlet.proxy.settings import effective

MAX_HEAD_TIMEOUT = 3600.0


def cluster_key(direction: str, name: str) -> str:
    """Clusters are keyed by listener: ``inbound:<own service>``, ``outbound:<upstream>``."""
    return f"{direction}:{name}"


@dataclass(frozen=True)
class Endpoint:
    id: str
    address: str
    port: int
    weight: int = 1
    zone: str = ""
    node: str = ""
    healthy: bool = True
    meta: tuple[tuple[str, str], ...] = ()

    def has_labels(self, labels: tuple[tuple[str, str], ...]) -> bool:
        return all(item in self.meta for item in labels)

    @property
    def key(self) -> tuple[str, int]:
        return (self.address, self.port)


def endpoint_to_dict(e: Endpoint) -> dict[str, Any]:
    return {**vars(e), "meta": dict(e.meta)}


def endpoint_from_dict(d: dict[str, Any]) -> Endpoint:
    return Endpoint(**{**d, "meta": tuple(sorted(dict(d.get("meta", {})).items()))})


@dataclass(frozen=True)
class ClusterConfig:
    """One upstream service as the sidecar sees it: healthy endpoints and settings."""

    name: str
    endpoints: tuple[Endpoint, ...] = ()
    settings: dict[str, Any] = field(default_factory=dict)

    @property
    def effective(self) -> dict[str, Any]:
        return effective(self.settings)


@dataclass(frozen=True)
class ListenerConfig:
    """``inbound`` forwards to the local app; ``outbound`` to cluster ``name``.
    ``head_timeout``: seconds a client has to send a request head whole (http)."""

    name: str
    direction: str
    host: str
    port: int
    protocol: str = "http"
    head_timeout: float = HEAD_TIMEOUT


@dataclass(frozen=True)
class Snapshot:
    version: int
    service: str
    instance: str
    listeners: tuple[ListenerConfig, ...]
    clusters: dict[str, ClusterConfig]
    zone: str = ""
    node: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {
            "version": self.version, "service": self.service, "instance": self.instance,
            "zone": self.zone, "node": self.node,
            "listeners": [vars(lc) for lc in self.listeners],
            "clusters": {
                name: {"name": c.name, "endpoints": [endpoint_to_dict(e) for e in c.endpoints],
                       "settings": c.settings, "effective": c.effective}
                for name, c in sorted(self.clusters.items())},
        }

    @classmethod
    def from_dict(cls, d: Any) -> Snapshot:
        """Raise ConfigError if ``d`` is not a well-formed snapshot."""
        try:
            listeners = tuple(ListenerConfig(**lc) for lc in d.get("listeners", ()))
            clusters = {
                name: ClusterConfig(
                    str(c.get("name", name)),
                    tuple(endpoint_from_dict(e) for e in c.get("endpoints", ())),
                    dict(c.get("settings", {})))
                for name, c in d.get("clusters", {}).items()}
            snapshot = cls(int(d["version"]), str(d.get("service", "")),
                           str(d.get("instance", "")), listeners, clusters,
                           str(d.get("zone", "")), str(d.get("node", "")))
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise ConfigError(f"malformed sidecar snapshot: {exc}", "snapshot") from None
        for lc in listeners:
            if lc.direction not in ("inbound", "outbound"):
                raise ConfigError(f"listener {lc.name}: bad direction {lc.direction!r}",
                                  "listeners")
            if lc.protocol not in ("http", "tcp"):
                raise ConfigError(f"listener {lc.name}: bad protocol {lc.protocol!r}",
                                  "listeners")
            timeout = lc.head_timeout
            if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) \
                    or not math.isfinite(timeout) or not 0 < timeout <= MAX_HEAD_TIMEOUT:
                raise ConfigError(f"listener {lc.name}: head_timeout must be a number of "
                                  f"seconds in (0, {MAX_HEAD_TIMEOUT:g}], not {timeout!r}",
                                  "listeners")
        return snapshot

"""Pure: the snapshot each sidecar should run, from the catalog and config entries."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from meshlet.proxy.config import ClusterConfig, Endpoint, ListenerConfig, Snapshot, cluster_key

LOOPBACK = "127.0.0.1"


def bootstrap_snapshot(service: str, instance: str, protocol: str, app_port: int,
                       upstreams: Sequence[tuple[str, str]]) -> Snapshot:
    """Version 0: the listeners to bind (ports chosen by the kernel) and the local app."""
    listeners = [ListenerConfig(service, "inbound", LOOPBACK, 0, protocol)]
    listeners += [ListenerConfig(name, "outbound", LOOPBACK, 0, proto)
                  for name, proto in upstreams]
    app = Endpoint(instance, LOOPBACK, app_port)
    clusters = {cluster_key("inbound", service):
                ClusterConfig(service, (app,), {"retries": 0})}
    return Snapshot(0, service, instance, tuple(listeners), clusters)


def endpoint_from_instance(inst: Mapping[str, Any]) -> Endpoint:
    return Endpoint(inst["id"], inst["address"], inst["port"], inst.get("weight", 1),
                    inst.get("zone", ""))


def build_snapshot(version: int, bootstrap: Snapshot,
                   instances: Mapping[str, Sequence[Mapping[str, Any]]],
                   settings: Mapping[str, Mapping[str, Any]]) -> Snapshot:
    """The bootstrap's listeners with current endpoints and settings for each upstream.

    ``instances`` maps an upstream service to its passing instances; ``settings`` maps a
    service to its config entry. Endpoints with weight 0 take no traffic.
    """
    clusters = dict(bootstrap.clusters)
    for lc in bootstrap.listeners:
        if lc.direction != "outbound":
            continue
        endpoints = tuple(sorted(
            (endpoint_from_instance(i) for i in instances.get(lc.name, ())
             if i.get("weight", 1) > 0), key=lambda e: e.id))
        clusters[cluster_key("outbound", lc.name)] = ClusterConfig(
            lc.name, endpoints, dict(settings.get(lc.name, {})))
    inbound = cluster_key("inbound", bootstrap.service)
    own = settings.get(bootstrap.service, {})
    if inbound in clusters and "request_timeout" in own:
        local = clusters[inbound]
        clusters[inbound] = ClusterConfig(local.name, local.endpoints,
                                          {**local.settings,
                                           "request_timeout": own["request_timeout"]})
    return Snapshot(version, bootstrap.service, bootstrap.instance, bootstrap.listeners,
                    clusters)

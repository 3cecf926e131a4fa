"""Pure: the snapshot each sidecar should run, from the catalog and config entries."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from meshlet.proxy.config import (
    ClusterConfig,
    Endpoint,
    IntentionsConfig,
    ListenerConfig,
    Snapshot,
    cluster_key,
    intentions_from_dict,
)

LOOPBACK = "127.0.0.1"


INBOUND_KEYS = ("request_timeout", "rate_limit_rps", "rate_limit_burst", "access_log",
                "tracing_endpoint", "trace_sampling")


def bootstrap_snapshot(service: str, instance: str, protocol: str, app_port: int,
                       upstreams: Sequence[tuple[str, str]], zone: str = "",
                       node: str = "") -> Snapshot:
    """Version 0: the listeners to bind (ports chosen by the kernel) and the local app."""
    listeners = [ListenerConfig(service, "inbound", LOOPBACK, 0, protocol)]
    listeners += [ListenerConfig(name, "outbound", LOOPBACK, 0, proto)
                  for name, proto in upstreams]
    app = Endpoint(instance, LOOPBACK, app_port)
    clusters = {cluster_key("inbound", service):
                ClusterConfig(service, (app,), {"retries": 0, "outlier_consecutive_failures": 0})}
    return Snapshot(0, service, instance, tuple(listeners), clusters, zone, node)


def namespaced_bootstrap(service: str, instance: str, protocol: str, app_port: int,
                         address: str, upstreams: Sequence[tuple[str, str, str, int]],
                         zone: str = "", node: str = "") -> Snapshot:
    """Version 0 for a sidecar in the workload's own namespace: inbound on the
    workload's address (a port chosen by the kernel), and each upstream ``(name,
    protocol, virtual IP, port)`` on its virtual IP and the port its apps serve on, so
    an app connecting to ``name:port`` reaches it. The app listens on the workload's
    address too: a wildcard bind would collide with the virtual IPs' listeners."""
    listeners = [ListenerConfig(service, "inbound", address, 0, protocol)]
    listeners += [ListenerConfig(name, "outbound", vip, port, proto)
                  for name, proto, vip, port in upstreams]
    app = Endpoint(instance, address, app_port)
    clusters = {cluster_key("inbound", service): ClusterConfig(
        service, (app,), {"retries": 0, "outlier_consecutive_failures": 0})}
    return Snapshot(0, service, instance, tuple(listeners), clusters, zone, node)


def endpoint_from_instance(inst: Mapping[str, Any]) -> Endpoint:
    return Endpoint(inst["id"], inst["address"], inst["port"], inst.get("weight", 1),
                    inst.get("zone", ""), inst.get("node", ""),
                    inst.get("status", "passing") == "passing",
                    tuple(sorted(inst.get("meta", {}).items())))


def intentions_for(service: str, body: Mapping[str, Any] | None) -> IntentionsConfig | None:
    """What ``service``'s inbound sidecar enforces, from the ``/v1/intentions`` answer
    ``body`` (None before the first: nothing): the intentions naming it or ``*``."""
    if body is None:
        return None
    return intentions_from_dict({
        "default_policy": body.get("default_policy", "allow"),
        "intentions": [i for i in body.get("intentions", ())
                       if i.get("destination") in (service, "*")]})


def build_snapshot(version: int, bootstrap: Snapshot,
                   instances: Mapping[str, Sequence[Mapping[str, Any]]],
                   settings: Mapping[str, Mapping[str, Any]],
                   intentions: Mapping[str, Any] | None = None) -> Snapshot:
    """The bootstrap's listeners with current endpoints and settings for each upstream.

    ``instances`` maps an upstream service to all its instances (those not passing are
    kept, marked unhealthy, so locality can tell how much of a zone is down);
    ``settings`` maps a service to its config entry. The inbound listener takes the
    service's own request timeout, rate limit and access-log settings, and its
    inbound listener the intentions that name it (``intentions``: the
    ``/v1/intentions`` answer; None keeps the bootstrap's).
    """
    clusters = dict(bootstrap.clusters)
    for lc in bootstrap.listeners:
        if lc.direction != "outbound":
            continue
        endpoints = tuple(sorted(
            (endpoint_from_instance(i) for i in instances.get(lc.name, ())),
            key=lambda e: e.id))
        clusters[cluster_key("outbound", lc.name)] = ClusterConfig(
            lc.name, endpoints, dict(settings.get(lc.name, {})))
    inbound = cluster_key("inbound", bootstrap.service)
    own = settings.get(bootstrap.service, {})
    inherited = {k: own[k] for k in INBOUND_KEYS if k in own}
    if inbound in clusters and inherited:
        local = clusters[inbound]
        clusters[inbound] = ClusterConfig(local.name, local.endpoints,
                                          {**local.settings, **inherited})
    enforced = bootstrap.intentions if intentions is None else \
        intentions_for(bootstrap.service, intentions)
    return Snapshot(version, bootstrap.service, bootstrap.instance, bootstrap.listeners,
                    clusters, bootstrap.zone, bootstrap.node, bootstrap.tls, enforced)

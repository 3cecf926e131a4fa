"""Which names a workload can resolve, pure: the catalog in, records out.

* ``NAME`` and ``NAME.NETWORK``: a container, or a mesh workload (``catalog-0``), that
  shares a network with the asker, with its address on that network (as Docker's
  embedded DNS answers);
* ``SERVICE`` and ``SERVICE.service``: a service in the catalog, with its virtual IP;
* ``_SERVICE._tcp`` (and ``_SERVICE._tcp.service``): SRV records with the ports the
  service's instances serve on, targeting ``SERVICE``.

A container's name wins over a service of the same name, as the nearer thing does.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from meshlet.net.dns import Records, Srv
from meshlet.net.overlay_plan import MESH_OWNER

SERVICE_DOMAIN = "service"


def resolve(name: str, me: Mapping[str, Any], containers: Mapping[str, Mapping[str, Any]],
            vips: Mapping[str, Mapping[str, Any]]) -> Records | None:
    """``me``: the asker's ``networks`` and ``addresses``; ``containers``: name ->
    record (the same keys); ``vips``: service -> ``{vip, ports}``."""
    if name.startswith("_"):
        return service_srv(name, vips)
    base, _, suffix = name.partition(".")
    target = containers.get(base)
    if target is not None:
        shared = [n for n in me["networks"] if n in target["addresses"]
                  and (not suffix or n == suffix)]
        if shared:
            return Records((target["addresses"][shared[0]],))
    if suffix in ("", SERVICE_DOMAIN) and base in vips:
        return Records((vips[base]["vip"],))
    return None


def service_srv(name: str, vips: Mapping[str, Mapping[str, Any]]) -> Records | None:
    labels = name.split(".")
    if len(labels) not in (2, 3) or labels[1] != "_tcp" or labels[2:] not in (
            [], [SERVICE_DOMAIN]):
        return None
    service = labels[0][1:]
    found = vips.get(service)
    if found is None:
        return None
    return Records(srv=tuple(Srv(port, service) for port in found["ports"]))


def directory(containers: Mapping[str, Mapping[str, Any]],
              networks: Iterable[Mapping[str, Any]]) -> dict[str, Mapping[str, Any]]:
    """Every workload by name: containers, and the mesh workloads whose addresses the
    networks hold (``svc:NODE:INSTANCE``); a container wins a name both have."""
    found: dict[str, dict[str, Any]] = {}
    for network in networks:
        for owner, address in network.get("addresses", {}).items():
            if owner.startswith(MESH_OWNER) and owner.count(":") >= 2:
                record = found.setdefault(owner.split(":", 2)[2],
                                          {"networks": [], "addresses": {}})
                record["networks"].append(network["name"])
                record["addresses"][network["name"]] = address
    return {**found, **containers}

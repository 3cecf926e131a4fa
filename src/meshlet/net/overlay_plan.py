"""What a host's overlay networks must hold, pure: from the catalog of nodes and
workloads, the remote workloads of each overlay network with their MAC address and
the tunnel end (VTEP) of the host they run on.

A workload's MAC on a network is derived from its address there (``02:42`` and the
four octets, as Docker does), so no host has to report it: every host computes the
same forwarding and neighbour entries from the same catalog. Workloads of a node
that is not registered (it left, or has not joined yet) are not reachable and are
left out, which is how a departed host's entries disappear.

A host itself holds an address on an overlay too (``host:<node>``), the source of
what it sends into the overlay from its own namespace (its ingress gateways, its
probes): the gateway address is the same on every host's bridge, so a workload on
another host would answer a connection from it to its own host's bridge, and the
connection would never open. Other hosts get entries for that address as for a
workload's, through the host's tunnel end.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

MESH_OWNER = "svc:"
HOST_OWNER = "host:"


def mac_for(address: str) -> str:
    """The MAC meshlet gives the interface holding ``address`` (locally administered)."""
    octets = ipaddress.IPv4Address(address).packed
    return "02:42:" + ":".join(f"{b:02x}" for b in octets)


@dataclass(frozen=True, order=True)
class Remote:
    """A workload on another host: reach ``mac`` (holding ``address``) through ``vtep``."""

    address: str
    mac: str
    vtep: str


def owner_node(owner: str, containers: Mapping[str, Mapping[str, Any]]) -> str | None:
    """The node an address holder runs on: a container's record says; a mesh
    workload's owner name carries it (``svc:NODE:INSTANCE``), as a host's address
    does (``host:NODE``)."""
    if owner.startswith((MESH_OWNER, HOST_OWNER)):
        return owner.split(":")[1]
    container = containers.get(owner)
    node = container.get("node") if container is not None else None
    return node if isinstance(node, str) else None


def mesh_owner(node: str, instance: str) -> str:
    return f"{MESH_OWNER}{node}:{instance}"


def host_owner(node: str) -> str:
    """Who holds host ``node``'s own address on an overlay."""
    return f"{HOST_OWNER}{node}"


def remotes(addresses: Mapping[str, str], containers: Mapping[str, Mapping[str, Any]],
            nodes: Mapping[str, str], me: str) -> set[Remote]:
    """The entries on host ``me`` for a network whose ``addresses`` map owner ->
    address; ``containers`` maps name -> record; ``nodes`` maps node -> address."""
    found = set()
    for owner, address in addresses.items():
        node = owner_node(owner, containers)
        if node is None or node == me or node not in nodes:
            continue
        found.add(Remote(address, mac_for(address), nodes[node]))
    return found

"""Which host ports every node publishes for the Services of type NodePort and
LoadBalancer, and which mesh protocol each carries. Pure.

A LoadBalancer Service is reached on its ``port`` on every node's host address (as a
bare-metal load balancer that binds on the nodes does) and, like a NodePort Service,
on its ``nodePort``. A NodePort without one gets a port from 30000-32767, chosen from
its name, the first free one on from there in the order the Services were created,
so every node picks the same one and a later Service never moves an earlier one's.
The protocol follows the port's name, as Istio reads it: ``tcp`` or ``tcp-…`` is
opaque TCP, anything else HTTP.
"""

from __future__ import annotations

import zlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

NODE_PORTS = range(30000, 32768)


@dataclass(frozen=True, order=True)
class Published:
    host_port: int
    service: str          # the catalog service: the Service's name
    port: int             # the Service's port
    protocol: str         # "http" or "tcp"


def port_protocol(name: str | None) -> str:
    """What a Service port's name says it speaks (Istio's convention: ``grpc``,
    ``grpc-web``…, ``http2-…``, ``tcp-…``); HTTP otherwise."""
    for protocol in ("tcp", "grpc", "http2"):
        if name is not None and (name == protocol or name.startswith(f"{protocol}-")):
            return protocol
    return "http"


def chosen_node_port(service: str, port: int, taken: set[int]) -> int | None:
    span = len(NODE_PORTS)
    start = zlib.crc32(f"{service}:{port}".encode()) % span
    for step in range(span):
        candidate = NODE_PORTS.start + (start + step) % span
        if candidate not in taken:
            return candidate
    return None


def published_ports(services: Iterable[Mapping[str, Any]]) -> list[Published]:
    """``services``: canonical Service manifests in the order they were created."""
    services = list(services)
    taken: set[int] = set()
    for manifest in services:  # explicit nodePorts first: a chosen one never takes them
        for p in manifest["spec"]["ports"]:
            if p.get("nodePort") is not None:
                taken.add(int(p["nodePort"]))
    out: list[Published] = []
    for manifest in services:
        spec = manifest["spec"]
        kind = spec.get("type", "ClusterIP")
        if kind not in ("NodePort", "LoadBalancer"):
            continue
        name = manifest["metadata"]["name"]
        for p in spec["ports"]:
            port, protocol = int(p["port"]), port_protocol(p.get("name"))
            node_port = p.get("nodePort")
            if node_port is None:
                node_port = chosen_node_port(name, port, taken)
                if node_port is not None:
                    taken.add(node_port)
            if kind == "LoadBalancer":
                out.append(Published(port, name, port, protocol))
            if node_port is not None:
                out.append(Published(int(node_port), name, port, protocol))
    first: dict[int, Published] = {}
    for entry in out:  # two Services on one host port: the earlier keeps it
        first.setdefault(entry.host_port, entry)
    return sorted(first.values())

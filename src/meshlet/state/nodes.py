"""The nodes table: the hosts running an agent and the address each is reached on.
Overlay networks are programmed from it: every host tunnels to the others' addresses,
and a host that leaves is dropped from every other host's forwarding entries. Pure.

A node's address must be a unicast address another host can send to: not unspecified,
multicast, link-local, reserved or broadcast. Loopback is the one exception, for a
cluster that lives on one host (``meshlet up``, where the agent reaches the server on
127.0.0.1 and so registers that): loopback addresses and others never mix, since no
other host can reach a node at 127.0.0.1, and a host told to tunnel there would send
its overlay traffic to itself.

A node may also name where its agent serves read-only Prometheus metrics
(``metrics``, ``HOST:PORT`` with a unicast IPv4 host, or "" for none), so that
service discovery (``meshlet prometheus-sd``) finds every agent."""

from __future__ import annotations

import ipaddress
from dataclasses import asdict, dataclass
from typing import Any

from meshlet.errors import ConfigError, NotFound
from meshlet.state.commands import NodeDeregister, NodeRegister
from meshlet.state.networks import OWNER_NAME


def unreachable_kind(address: ipaddress.IPv4Address) -> str | None:
    """What makes ``address`` no host's unicast address, or None if nothing does."""
    if address in ipaddress.IPv4Network("0.0.0.0/8"):
        return "an unspecified ('this network')"
    if address.is_multicast:
        return "a multicast"
    if address.is_link_local:
        return "a link-local"
    if address.is_reserved:  # 240.0.0.0/4, 255.255.255.255 among them
        return "a reserved or broadcast"
    return None


def check_metrics_address(value: object) -> None:
    """``value`` is "" or ``IPv4:PORT`` that a scraper can reach; raises ConfigError."""
    if value == "":
        return
    if not isinstance(value, str):
        raise ConfigError("metrics: expected HOST:PORT text", "metrics")
    host, sep, port = value.rpartition(":")
    if not sep or not (port.isascii() and port.isdigit()) or not 0 < int(port) < 65536:
        raise ConfigError(f"metrics: {value!r} is not IPv4:PORT", "metrics")
    try:
        address = ipaddress.IPv4Address(host)
    except ValueError:
        raise ConfigError(f"metrics: {value!r} is not IPv4:PORT", "metrics") from None
    kind = unreachable_kind(address)
    if kind is not None:
        raise ConfigError(f"metrics: {host} is {kind} address, which no scraper can "
                          "reach", "metrics")


@dataclass
class Node:
    name: str
    address: str
    create_index: int
    modify_index: int
    zone: str = ""
    cpus: float = 0.0
    memory: int = 0
    metrics: str = ""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class NodeTable:
    def __init__(self) -> None:
        self.nodes: dict[str, Node] = {}
        self.index = 0

    def check_deregister(self, cmd: NodeDeregister) -> None:
        if cmd.name not in self.nodes:
            raise NotFound(f"no node named {cmd.name!r}", "name")

    def check_register(self, cmd: NodeRegister) -> None:
        if not isinstance(cmd.name, str) or not OWNER_NAME.match(cmd.name):
            raise ConfigError(f"name: {cmd.name!r} is not a valid node name", "name")
        try:
            address = ipaddress.IPv4Address(cmd.address)
        except (ValueError, TypeError):
            raise ConfigError(f"address: {cmd.address!r} is not an IPv4 address",
                              "address") from None
        kind = unreachable_kind(address)
        if kind is not None:
            raise ConfigError(f"address: {cmd.address} is {kind} address, which cannot "
                              "be a node's (other hosts must be able to send to it)",
                              "address")
        check_metrics_address(cmd.metrics)
        for other in self.nodes.values():
            if other.name == cmd.name:
                continue
            if ipaddress.IPv4Address(other.address).is_loopback != address.is_loopback:
                raise ConfigError(
                    f"address: {cmd.address} cannot join node {other.name!r} at "
                    f"{other.address}: a cluster's nodes are either all on one host's "
                    "loopback or all on addresses other hosts reach (give the agent "
                    "--advertise IP)", "address")

    def register(self, index: int, cmd: NodeRegister) -> dict[str, Any]:
        node = self.nodes.get(cmd.name)
        facts = (cmd.address, cmd.zone, cmd.cpus, cmd.memory, cmd.metrics)
        if node is None:
            node = self.nodes[cmd.name] = Node(cmd.name, cmd.address, index, index,
                                               cmd.zone, cmd.cpus, cmd.memory, cmd.metrics)
            self.index = index
        elif (node.address, node.zone, node.cpus, node.memory, node.metrics) != facts:
            node.address, node.zone, node.cpus, node.memory, node.metrics = facts
            node.modify_index = index
            self.index = index
        return node.to_dict()

    def deregister(self, index: int, cmd: NodeDeregister) -> None:
        del self.nodes[cmd.name]
        self.index = index

    def dump(self) -> dict[str, Any]:
        return {"index": self.index,
                "nodes": [self.nodes[k].to_dict() for k in sorted(self.nodes)]}

    def load(self, body: dict[str, Any] | None) -> None:
        body = body or {"index": 0, "nodes": []}
        self.index = body["index"]
        self.nodes = {d["name"]: Node(**d) for d in body["nodes"]}

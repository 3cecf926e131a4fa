"""The nodes table: the hosts running an agent and the address each is reached on.
Overlay networks are programmed from it: every host tunnels to the others' addresses,
and a host that leaves is dropped from every other host's forwarding entries. Pure."""

from __future__ import annotations

import ipaddress
from dataclasses import asdict, dataclass
from typing import Any

from meshlet.errors import ConfigError, NotFound
from meshlet.state.commands import NodeDeregister, NodeRegister
from meshlet.state.networks import OWNER_NAME


@dataclass
class Node:
    name: str
    address: str
    create_index: int
    modify_index: int

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
        if address.is_unspecified or address.is_multicast:
            raise ConfigError(f"address: {cmd.address} cannot be a tunnel end", "address")

    def register(self, index: int, cmd: NodeRegister) -> dict[str, Any]:
        node = self.nodes.get(cmd.name)
        if node is None:
            node = self.nodes[cmd.name] = Node(cmd.name, cmd.address, index, index)
            self.index = index
        elif node.address != cmd.address:
            node.address, node.modify_index = cmd.address, index
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

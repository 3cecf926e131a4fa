"""The containers table: workloads started with `meshlet run`, what is wanted of them
(running or stopped) and what their agent last saw. Addresses on their networks are
assigned as the create (or connect) command applies, in the networks table, so they
are the same on every server and released with the container. Pure."""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass, field
from typing import Any

from meshlet.errors import ConfigError, Conflict, NotFound
from meshlet.state.commands import (
    AddressAssign,
    AddressRelease,
    ContainerConnect,
    ContainerCreate,
    ContainerDelete,
    ContainerDesire,
    ContainerReport,
)
from meshlet.state.networks import ADDRESSED, NetworkTable

# \Z, not $: "$" also matches before a final "\n".
CONTAINER_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}\Z")
ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*\Z")
BUILTIN = ("host", "none")       # network names that need no `network create`
DESIRED = ("running", "stopped")
STATUSES = ("created", "running", "exited", "failed", "removed")


@dataclass(frozen=True)
class Port:
    host_ip: str
    host_port: int
    port: int

    def __str__(self) -> str:
        return f"{self.host_ip}:{self.host_port}->{self.port}/tcp"


def parse_port(spec: str) -> Port:
    """``HOSTPORT:PORT`` or ``IP:HOSTPORT:PORT``; raises ConfigError naming ``ports``."""
    parts = spec.split(":") if isinstance(spec, str) else []
    if len(parts) == 2:
        parts = ["0.0.0.0", *parts]
    if len(parts) != 3 or not parts[1].isdigit() or not parts[2].isdigit():
        raise ConfigError(f"ports: {spec!r} is not HOSTPORT:PORT or IP:HOSTPORT:PORT",
                          "ports")
    try:
        ipaddress.IPv4Address(parts[0])
    except ValueError:
        raise ConfigError(f"ports: {parts[0]!r} in {spec!r} is not an IPv4 address",
                          "ports") from None
    host_port, port = int(parts[1]), int(parts[2])
    if not (0 < host_port < 65536 and 0 < port < 65536):
        raise ConfigError(f"ports: {spec!r}: ports are 1..65535", "ports")
    return Port(parts[0], host_port, port)


@dataclass
class Container:
    name: str
    node: str
    command: list[str]
    env: dict[str, str]
    networks: list[str]
    ports: list[str]
    create_index: int
    modify_index: int
    desired: str = "running"
    status: str = "created"
    pid: int | None = None
    exit_code: int | None = None
    namespace: str = ""
    log: str = ""
    detail: str = ""
    addresses: dict[str, str] = field(default_factory=dict)  # network -> address

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "node": self.node, "command": list(self.command),
                "env": dict(self.env), "networks": list(self.networks),
                "ports": list(self.ports), "desired": self.desired, "status": self.status,
                "pid": self.pid, "exit_code": self.exit_code, "namespace": self.namespace,
                "log": self.log, "detail": self.detail,
                "addresses": dict(self.addresses), "create_index": self.create_index,
                "modify_index": self.modify_index}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Container:
        return cls(**d)


class ContainerTable:
    def __init__(self, networks: NetworkTable) -> None:
        self.networks = networks
        self.containers: dict[str, Container] = {}
        self.index = 0

    def get(self, name: str) -> Container:
        found = self.containers.get(name)
        if found is None:
            raise NotFound(f"no container named {name!r}", "name")
        return found

    # -- checks ---------------------------------------------------------------------------

    def check_desire(self, cmd: ContainerDesire) -> None:
        self.get(cmd.name)
        if cmd.desired not in DESIRED:
            raise ConfigError(f"desired: {cmd.desired!r} is not running or stopped",
                              "desired")

    def check_report(self, cmd: ContainerReport) -> None:
        self.get(cmd.name)
        if cmd.status not in STATUSES:
            raise ConfigError(f"status: {cmd.status!r} is not one of "
                              f"{', '.join(STATUSES)}", "status")

    def check_delete(self, cmd: ContainerDelete) -> None:
        self.get(cmd.name)

    def check_create(self, cmd: ContainerCreate) -> None:
        if not isinstance(cmd.name, str) or not CONTAINER_NAME.match(cmd.name):
            raise ConfigError(f"name: {cmd.name!r} is not a valid container name (letters, "
                              "digits, '_', '.', '-'; at most 63)", "name")
        if not isinstance(cmd.node, str) or not cmd.node:
            raise ConfigError("node: must be a non-empty string", "node")
        if not cmd.command or not all(isinstance(a, str) for a in cmd.command):
            raise ConfigError("command: give the command to run", "command")
        if not isinstance(cmd.env, dict) or not all(
                isinstance(k, str) and ENV_NAME.match(k) and isinstance(v, str)
                for k, v in cmd.env.items()):
            raise ConfigError("env: names are letters, digits and '_'; values strings",
                              "env")
        if len(set(cmd.networks)) != len(cmd.networks):
            raise ConfigError("networks: a network is joined once", "networks")
        builtin = [n for n in cmd.networks if n in BUILTIN and n not in self.networks.networks]
        if builtin and len(cmd.networks) > 1:
            raise ConfigError(f"networks: {builtin[0]!r} cannot be combined with other "
                              "networks", "networks")
        ports = [parse_port(p) for p in cmd.ports]
        if cmd.name in self.containers:
            raise Conflict(f"a container named {cmd.name!r} already exists", "name")
        addressed = self.addressed(cmd.networks)
        if ports and not addressed:
            raise ConfigError("ports: publishing needs a bridge or overlay network (on the "
                              "host's network the port is already the host's)", "ports")
        for network in addressed:
            self.networks.check_assign(AddressAssign(network, cmd.name))
        self.check_ports_free(cmd.node, ports)

    def addressed(self, names: tuple[str, ...] | list[str]) -> list[str]:
        """The networks among ``names`` that give addresses; raises NotFound."""
        found = []
        for name in names:
            if name in BUILTIN and name not in self.networks.networks:
                continue
            network = self.networks.get(name, "network")
            if network.driver in ADDRESSED:
                found.append(name)
        return found

    def check_ports_free(self, node: str, ports: list[Port]) -> None:
        """Raise Conflict if a host port is published twice on ``node``."""
        held = [(p, c.name) for c in self.containers.values() if c.node == node
                for p in map(parse_port, c.ports)]
        for i, port in enumerate(ports):
            rivals = held + [(p, "this container") for p in ports[:i]]
            for other, owner in rivals:
                if other.host_port == port.host_port and (
                        other.host_ip == port.host_ip
                        or "0.0.0.0" in (other.host_ip, port.host_ip)):
                    raise Conflict(f"ports: host port {port.host_port} is already "
                                   f"published by {owner!r}", "ports")

    def check_connect(self, cmd: ContainerConnect) -> None:
        container = self.get(cmd.name)
        joined = cmd.network in container.networks
        if not cmd.connect:
            if not joined:
                raise ConfigError(f"{cmd.name!r} is not connected to {cmd.network!r}",
                                  "network")
            return
        if joined:
            raise Conflict(f"{cmd.name!r} is already connected to {cmd.network!r}",
                           "network")
        if not self.addressed(container.networks):
            raise ConfigError(f"{cmd.name!r} runs on the host's network (or none); it "
                              "cannot join others", "network")
        if not self.addressed([cmd.network]):
            raise ConfigError(f"network {cmd.network!r} gives no addresses to join",
                              "network")
        self.networks.check_assign(AddressAssign(cmd.network, cmd.name))

    # -- apply ----------------------------------------------------------------------------

    def create(self, index: int, cmd: ContainerCreate) -> dict[str, Any]:
        container = Container(cmd.name, cmd.node, list(cmd.command), dict(cmd.env),
                              list(cmd.networks), list(cmd.ports), index, index)
        for network in self.addressed(cmd.networks):
            got = self.networks.assign(index, AddressAssign(network, cmd.name))
            container.addresses[network] = got["address"]
        self.containers[cmd.name] = container
        self.index = index
        return container.to_dict()

    def desire(self, index: int, cmd: ContainerDesire) -> dict[str, Any]:
        container = self.containers[cmd.name]
        container.desired = cmd.desired
        container.modify_index = self.index = index
        return container.to_dict()

    def report(self, index: int, cmd: ContainerReport) -> dict[str, Any]:
        container = self.containers[cmd.name]
        container.status, container.pid, container.exit_code = (cmd.status, cmd.pid,
                                                                cmd.exit_code)
        container.namespace, container.log, container.detail = (cmd.namespace, cmd.log,
                                                                cmd.detail)
        container.modify_index = self.index = index
        return container.to_dict()

    def delete(self, index: int, cmd: ContainerDelete) -> None:
        container = self.containers.pop(cmd.name)
        for network in container.addresses:
            if network in self.networks.networks:
                self.networks.release(index, AddressRelease(network, cmd.name))
        self.index = index

    def connect(self, index: int, cmd: ContainerConnect) -> dict[str, Any]:
        container = self.containers[cmd.name]
        if cmd.connect:
            got = self.networks.assign(index, AddressAssign(cmd.network, cmd.name))
            container.addresses[cmd.network] = got["address"]
            container.networks.append(cmd.network)
        else:
            container.networks.remove(cmd.network)
            if container.addresses.pop(cmd.network, None) is not None:
                self.networks.release(index, AddressRelease(cmd.network, cmd.name))
        container.modify_index = self.index = index
        return container.to_dict()

    # -- snapshots ------------------------------------------------------------------------

    def dump(self) -> dict[str, Any]:
        return {"index": self.index,
                "containers": [self.containers[k].to_dict() for k in sorted(self.containers)]}

    def load(self, body: dict[str, Any] | None) -> None:
        body = body or {"index": 0, "containers": []}
        self.index = body["index"]
        self.containers = {d["name"]: Container.from_dict(d) for d in body["containers"]}


"""The containers table: workloads started with `meshlet run`, what is wanted of them
(running or stopped) and what their agent last saw. Addresses on their networks are
assigned as the create (or connect) command applies, in the networks table, so they
are the same on every server and released with the container. Pure."""

from __future__ import annotations

import ipaddress
import math
import re
from dataclasses import dataclass, field
from typing import Any

from meshlet.errors import ConfigError, Conflict, NotFound
from meshlet.quantities import MAX_CPUS, MAX_MEMORY, MIN_MEMORY
from meshlet.restart_policy import parse_restart
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
STATUSES = ("created", "running", "restarting", "exited", "failed", "removed")
# An image reference as given: checked for its form where the image store reads it.
IMAGE_REF = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._/:@-]{0,254}\Z")
IMAGE_ID = re.compile(r"^(sha256:[0-9a-f]{64})?\Z")
MAX_STOP_TIMEOUT = 3600
MAX_ARGS = 4096


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
    if len(parts) != 3 or not all(p.isascii() and p.isdigit() for p in parts[1:]):
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
    image: str = ""
    image_id: str = ""
    entrypoint: list[str] = field(default_factory=list)
    user: str = ""
    workdir: str = ""
    restart: str = "no"
    memory: int = 0
    cpus: float = 0.0
    stop_timeout: int = 10
    restart_count: int = 0

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "node": self.node, "command": list(self.command),
                "env": dict(self.env), "networks": list(self.networks),
                "ports": list(self.ports), "desired": self.desired, "status": self.status,
                "pid": self.pid, "exit_code": self.exit_code, "namespace": self.namespace,
                "log": self.log, "detail": self.detail,
                "addresses": dict(self.addresses), "create_index": self.create_index,
                "modify_index": self.modify_index, "image": self.image,
                "image_id": self.image_id, "entrypoint": list(self.entrypoint),
                "user": self.user, "workdir": self.workdir, "restart": self.restart,
                "memory": self.memory, "cpus": self.cpus,
                "stop_timeout": self.stop_timeout, "restart_count": self.restart_count}

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
        if not isinstance(cmd.stop_timeout, int) or not \
                -1 <= cmd.stop_timeout <= MAX_STOP_TIMEOUT:
            raise ConfigError(f"stop_timeout: seconds, 0..{MAX_STOP_TIMEOUT}",
                              "stop_timeout")

    def check_report(self, cmd: ContainerReport) -> None:
        self.get(cmd.name)
        if cmd.status not in STATUSES:
            raise ConfigError(f"status: {cmd.status!r} is not one of "
                              f"{', '.join(STATUSES)}", "status")
        if not isinstance(cmd.restart_count, int) or not 0 <= cmd.restart_count < 2**31:
            raise ConfigError("restart_count: a count", "restart_count")

    def check_delete(self, cmd: ContainerDelete) -> None:
        self.get(cmd.name)

    def check_create(self, cmd: ContainerCreate) -> None:
        if not isinstance(cmd.name, str) or not CONTAINER_NAME.match(cmd.name):
            raise ConfigError(f"name: {cmd.name!r} is not a valid container name (letters, "
                              "digits, '_', '.', '-'; at most 63)", "name")
        if not isinstance(cmd.node, str) or not cmd.node:
            raise ConfigError("node: must be a non-empty string", "node")
        self.check_image(cmd)
        self.check_limits(cmd)
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

    @staticmethod
    def check_image(cmd: ContainerCreate) -> None:
        """A command, or an image (whose Cmd is the default command)."""
        for name, args in (("command", cmd.command), ("entrypoint", cmd.entrypoint)):
            if not isinstance(args, tuple) or len(args) > MAX_ARGS or not all(
                    isinstance(a, str) and "\0" not in a for a in args):
                raise ConfigError(f"{name}: a list of at most {MAX_ARGS} strings", name)
        if not isinstance(cmd.image, str) or not isinstance(cmd.image_id, str) or \
                not IMAGE_ID.match(cmd.image_id):
            raise ConfigError("image_id: sha256:<64 hex digits>", "image_id")
        if not cmd.image:
            if not cmd.command:
                raise ConfigError("command: give the command to run, or an image",
                                  "command")
            if cmd.entrypoint or cmd.user or cmd.workdir or cmd.image_id:
                raise ConfigError("entrypoint, user and workdir need an image", "image")
            return
        if not IMAGE_REF.match(cmd.image):
            raise ConfigError(f"image: {cmd.image!r} is not an image reference", "image")
        for name, text in (("user", cmd.user), ("workdir", cmd.workdir)):
            if not isinstance(text, str) or len(text) > 4096 or any(
                    ord(c) < 32 for c in text):
                raise ConfigError(f"{name}: at most 4096 printable characters", name)
        if cmd.workdir and not cmd.workdir.startswith("/"):
            raise ConfigError(f"workdir: {cmd.workdir!r} is not an absolute path",
                              "workdir")

    @staticmethod
    def check_limits(cmd: ContainerCreate) -> None:
        parse_restart(cmd.restart)
        if not isinstance(cmd.memory, int) or isinstance(cmd.memory, bool) or (
                cmd.memory and not MIN_MEMORY <= cmd.memory <= MAX_MEMORY):
            raise ConfigError("memory: bytes, 0 (no limit) or 6 MiB .. 1 PiB", "memory")
        if not isinstance(cmd.cpus, (int, float)) or isinstance(cmd.cpus, bool) or \
                not math.isfinite(cmd.cpus) or not 0 <= cmd.cpus <= MAX_CPUS:
            raise ConfigError(f"cpus: 0 (no limit) .. {MAX_CPUS:g}", "cpus")
        if not isinstance(cmd.stop_timeout, int) or not \
                0 <= cmd.stop_timeout <= MAX_STOP_TIMEOUT:
            raise ConfigError(f"stop_timeout: seconds, 0..{MAX_STOP_TIMEOUT}",
                              "stop_timeout")

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
                              list(cmd.networks), list(cmd.ports), index, index,
                              image=cmd.image, image_id=cmd.image_id,
                              entrypoint=list(cmd.entrypoint), user=cmd.user,
                              workdir=cmd.workdir, restart=cmd.restart, memory=cmd.memory,
                              cpus=float(cmd.cpus), stop_timeout=cmd.stop_timeout)
        for network in self.addressed(cmd.networks):
            got = self.networks.assign(index, AddressAssign(network, cmd.name))
            container.addresses[network] = got["address"]
        self.containers[cmd.name] = container
        self.index = index
        return container.to_dict()

    def desire(self, index: int, cmd: ContainerDesire) -> dict[str, Any]:
        container = self.containers[cmd.name]
        container.desired = cmd.desired
        if cmd.stop_timeout >= 0:
            container.stop_timeout = cmd.stop_timeout
        container.modify_index = self.index = index
        return container.to_dict()

    def report(self, index: int, cmd: ContainerReport) -> dict[str, Any]:
        container = self.containers[cmd.name]
        container.status, container.pid, container.exit_code = (cmd.status, cmd.pid,
                                                                cmd.exit_code)
        container.namespace, container.log, container.detail = (cmd.namespace, cmd.log,
                                                                cmd.detail)
        container.restart_count = cmd.restart_count
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


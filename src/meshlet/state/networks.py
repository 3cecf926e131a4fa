"""The networks table of the state machine: each network's driver, pool and the
addresses handed out on it. Pure: the checks raise what ``apply`` would return, and
every server applying the same commands hands out the same addresses."""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass, field
from typing import Any

from meshlet.errors import ConfigError, Conflict, NotFound
from meshlet.net import ipam
from meshlet.state.commands import AddressAssign, AddressRelease, NetworkCreate, NetworkDelete
from meshlet.state.vips import VipTable

DRIVERS = ("bridge", "overlay", "host", "none")
ADDRESSED = ("bridge", "overlay")  # the drivers that give workloads their own address
# \Z, not $: "$" also matches before a final "\n".
NETWORK_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}\Z")
OWNER_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,127}\Z")
FIRST_VNI = 4096   # overlay networks' VXLAN ids: the lowest free from here
MAX_VNI = 2**24 - 1


@dataclass
class Network:
    name: str
    driver: str
    subnet: str | None
    gateway: str | None
    internal: bool
    create_index: int
    modify_index: int
    addresses: dict[str, str] = field(default_factory=dict)  # owner -> address
    vni: int | None = None  # overlay only: the same VXLAN id on every host

    def pool(self) -> ipam.Pool:
        assert self.subnet is not None and self.gateway is not None
        return ipam.Pool(ipaddress.IPv4Network(self.subnet),
                         ipaddress.IPv4Address(self.gateway))

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "driver": self.driver, "subnet": self.subnet,
                "gateway": self.gateway, "internal": self.internal,
                "create_index": self.create_index, "modify_index": self.modify_index,
                "addresses": dict(sorted(self.addresses.items())), "vni": self.vni}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Network:
        return cls(**{**d, "addresses": dict(d["addresses"])})


class NetworkTable:
    def __init__(self, vips: VipTable | None = None) -> None:
        self.vips = vips or VipTable()  # networks keep clear of the service CIDR
        self.networks: dict[str, Network] = {}
        self.index = 0  # of the last change, for blocking queries

    # -- checks: raise the error apply would return --------------------------------------

    def check_create(self, cmd: NetworkCreate) -> ipam.Pool | None:
        """The pool the network would get (None for host and none)."""
        if not isinstance(cmd.name, str) or not NETWORK_NAME.match(cmd.name):
            raise ConfigError(f"name: {cmd.name!r} is not a valid network name (letters, "
                              "digits, '_', '.', '-'; at most 64)", "name")
        if cmd.driver not in DRIVERS:
            raise ConfigError(f"driver: {cmd.driver!r} is not one of {', '.join(DRIVERS)}",
                              "driver")
        if cmd.driver not in ADDRESSED:
            for name in ("subnet", "gateway"):
                if getattr(cmd, name) is not None:
                    raise ConfigError(f"{name}: the {cmd.driver} driver gives workloads "
                                      "no addresses of their own", name)
            if cmd.internal:
                raise ConfigError(f"internal: only for bridge and overlay networks, not "
                                  f"{cmd.driver}", "internal")
        if not isinstance(cmd.internal, bool):
            raise ConfigError("internal: must be true or false", "internal")
        subnet = ipam.parse_subnet(cmd.subnet) if cmd.subnet is not None else None
        if subnet is None and cmd.gateway is not None:
            raise ConfigError("gateway: give a subnet with the gateway", "gateway")
        pool = ipam.make_pool(subnet, cmd.gateway) if subnet is not None else None
        if cmd.name in self.networks:
            raise Conflict(f"network {cmd.name!r} already exists", "name")
        if cmd.driver not in ADDRESSED:
            return None
        taken = self.subnets()
        services = ipaddress.IPv4Network(self.vips.cidr)
        if pool is None:
            return ipam.make_pool(ipam.default_subnet([services, *(t for _, t in taken)]),
                                  None)
        ipam.check_overlap(pool.subnet, taken)
        if pool.subnet.overlaps(services):
            raise Conflict(f"subnet: {pool.subnet} overlaps the service CIDR {services} "
                           "(services' virtual IPs)", "subnet")
        return pool

    def subnets(self) -> list[tuple[str, ipaddress.IPv4Network]]:
        return [(n.name, ipaddress.IPv4Network(n.subnet))
                for n in self.networks.values() if n.subnet is not None]

    def check_delete(self, cmd: NetworkDelete) -> None:
        network = self.get(cmd.name)
        if network.addresses:
            raise Conflict(f"network {cmd.name!r} is in use by "
                           f"{', '.join(sorted(network.addresses))}; disconnect or remove "
                           "them first", "name")

    def check_assign(self, cmd: AddressAssign) -> None:
        network = self.get(cmd.network, "network")
        if network.driver not in ADDRESSED:
            raise ConfigError(f"network {cmd.network!r} ({network.driver}) hands out no "
                              "addresses", "network")
        if not isinstance(cmd.owner, str) or not OWNER_NAME.match(cmd.owner):
            raise ConfigError(f"owner: {cmd.owner!r} is not a valid name", "owner")
        held = network.addresses.get(cmd.owner)
        if held is not None:
            if cmd.address is not None and cmd.address != held:
                raise Conflict(f"{cmd.owner!r} already has {held} on {cmd.network!r}",
                               "address")
            return
        used = set(network.addresses.values())
        if cmd.address is not None:
            ipam.check_requested(network.pool(), cmd.address, used)
        else:
            ipam.allocate(network.pool(), used, network.name)

    def check_release(self, cmd: AddressRelease) -> None:
        self.get(cmd.network, "network")

    def get(self, name: str, field_name: str = "name") -> Network:
        network = self.networks.get(name)
        if network is None:
            raise NotFound(f"no network named {name!r}", field_name)
        return network

    # -- apply (after the check passed) ---------------------------------------------------

    def create(self, index: int, cmd: NetworkCreate) -> dict[str, Any]:
        pool = self.check_create(cmd)
        network = Network(cmd.name, cmd.driver,
                          str(pool.subnet) if pool else None,
                          str(pool.gateway) if pool else None,
                          bool(cmd.internal), index, index,
                          vni=self.free_vni() if cmd.driver == "overlay" else None)
        self.networks[cmd.name] = network
        self.index = index
        return network.to_dict()

    def free_vni(self) -> int:
        used = {n.vni for n in self.networks.values()}
        return next(v for v in range(FIRST_VNI, MAX_VNI + 1) if v not in used)

    def delete(self, index: int, cmd: NetworkDelete) -> None:
        del self.networks[cmd.name]
        self.index = index

    def assign(self, index: int, cmd: AddressAssign) -> dict[str, Any]:
        network = self.networks[cmd.network]
        address = network.addresses.get(cmd.owner)
        if address is None:
            address = cmd.address or str(ipam.allocate(
                network.pool(), set(network.addresses.values()), network.name))
            network.addresses[cmd.owner] = address
            network.modify_index = self.index = index
        return {"network": network.name, "owner": cmd.owner, "address": address,
                "prefix": network.pool().prefix,
                "gateway": None if network.internal else network.gateway}

    def release(self, index: int, cmd: AddressRelease) -> bool:
        network = self.networks[cmd.network]
        released = network.addresses.pop(cmd.owner, None) is not None
        if released:
            network.modify_index = self.index = index
        return released

    # -- snapshots ------------------------------------------------------------------------

    def dump(self) -> dict[str, Any]:
        return {"index": self.index,
                "networks": [self.networks[k].to_dict() for k in sorted(self.networks)]}

    def load(self, body: dict[str, Any] | None) -> None:
        body = body or {"index": 0, "networks": []}
        self.index = body["index"]
        self.networks = {d["name"]: Network.from_dict(d) for d in body["networks"]}

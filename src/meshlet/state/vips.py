"""Service virtual IPs: every service in the catalog gets one address from the service
CIDR (10.96.0.0/16 unless set), as a Kubernetes Service gets its ClusterIP. Inside a
workload's namespace the service's name resolves to it, and the workload's sidecar
listens on it, so an unmodified app that connects to ``catalog:80`` is load-balanced.

A service gets its address when its first instance registers and gives it back when
its last one leaves; the lowest free address is taken, so a service that comes back
usually gets the same one. Changing the CIDR renumbers every service, in name order.
Pure, and the same on every server."""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from typing import Any

from meshlet.errors import Conflict
from meshlet.net import ipam
from meshlet.state.commands import ServiceCidrSet

DEFAULT_CIDR = "10.96.0.0/16"


class VipTable:
    def __init__(self) -> None:
        self.cidr = DEFAULT_CIDR
        self.vips: dict[str, str] = {}   # service -> address
        self.index = 0

    def pool(self) -> ipam.Pool:
        # The first address is held back, as Kubernetes keeps it for the API server.
        return ipam.make_pool(ipaddress.IPv4Network(self.cidr), None)

    def check_cidr(self, cmd: ServiceCidrSet,
                   networks: Iterable[tuple[str, ipaddress.IPv4Network]]) -> None:
        subnet = ipam.parse_subnet(cmd.cidr, "cidr")
        try:
            ipam.check_overlap(subnet, networks)
        except Conflict as exc:
            raise Conflict(str(exc).replace("subnet:", "cidr:", 1), "cidr") from None
        if subnet.num_addresses - 3 < len(self.vips):
            raise Conflict(f"cidr: {cmd.cidr} has room for {subnet.num_addresses - 3} "
                           f"services; {len(self.vips)} have addresses", "cidr")

    def set_cidr(self, index: int, cmd: ServiceCidrSet) -> dict[str, Any]:
        self.cidr = str(ipam.parse_subnet(cmd.cidr, "cidr"))
        services = sorted(self.vips)
        self.vips = {}
        for service in services:
            self.ensure(index, service)
        self.index = index
        return self.to_dict()

    def ensure(self, index: int, service: str) -> None:
        """Give ``service`` an address if it has none (none is left when all are taken)."""
        if service in self.vips:
            return
        try:
            address = ipam.allocate(self.pool(), set(self.vips.values()), "service CIDR")
        except Conflict:
            return
        self.vips[service] = str(address)
        self.index = index

    def release(self, index: int, service: str) -> None:
        if self.vips.pop(service, None) is not None:
            self.index = index

    def to_dict(self) -> dict[str, Any]:
        return {"cidr": self.cidr, "vips": dict(sorted(self.vips.items()))}

    def dump(self) -> dict[str, Any]:
        return {"index": self.index, **self.to_dict()}

    def load(self, body: dict[str, Any] | None) -> None:
        body = body or {"index": 0, "cidr": DEFAULT_CIDR, "vips": {}}
        self.index, self.cidr, self.vips = body["index"], body["cidr"], dict(body["vips"])



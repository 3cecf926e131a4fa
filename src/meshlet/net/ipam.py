"""IP address management, pure: parse and check a network's pool, pick a default
subnet that overlaps no other, hand out the lowest free address.

The control plane calls these while applying commands, so every server makes the same
choice and an address is never handed out twice. IPv4 only for now.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Collection, Iterable
from dataclasses import dataclass

from meshlet.errors import ConfigError, Conflict

# Docker's default pools, without 172.17.0.0/16 (docker0): /16s, then /20s.
DEFAULT_POOLS = (
    [ipaddress.IPv4Network(f"172.{n}.0.0/16") for n in range(18, 32)]
    + [ipaddress.IPv4Network(f"192.168.{n}.0/20") for n in range(0, 256, 16)]
)


# Blocks no network may take: their addresses mean something else to every host, so a
# bridge or overlay on them would capture or black-hole that traffic.
SPECIAL_BLOCKS = (
    (ipaddress.IPv4Network("0.0.0.0/8"), "'this network' (unspecified addresses)"),
    (ipaddress.IPv4Network("127.0.0.0/8"), "loopback"),
    (ipaddress.IPv4Network("169.254.0.0/16"), "link-local"),
    (ipaddress.IPv4Network("224.0.0.0/4"), "multicast"),
    (ipaddress.IPv4Network("240.0.0.0/4"), "reserved (and broadcast)"),
)
SHORTEST_PREFIX = 8


@dataclass(frozen=True)
class Pool:
    subnet: ipaddress.IPv4Network
    gateway: ipaddress.IPv4Address

    @property
    def prefix(self) -> int:
        return self.subnet.prefixlen


def parse_subnet(text: str, field: str = "subnet") -> ipaddress.IPv4Network:
    """A CIDR such as ``10.1.0.0/24``, /8 to /30, clear of loopback, link-local,
    multicast, unspecified and reserved addresses; raises ConfigError naming ``field``."""
    if not isinstance(text, str):
        raise ConfigError(f"{field}: expected a network in CIDR form such as 10.1.0.0/24",
                          field)
    try:
        subnet = ipaddress.ip_network(text, strict=True)
    except ValueError as exc:
        raise ConfigError(f"{field}: {text[:64]!r} is not a network in CIDR form ({exc})",
                          field) from None
    if not isinstance(subnet, ipaddress.IPv4Network):
        raise ConfigError(f"{field}: {text!r}: only IPv4 networks are supported", field)
    if subnet.prefixlen > 30:
        raise ConfigError(f"{field}: {text!r} is too small: it needs room for a gateway "
                          "and at least one address (/30 or larger)", field)
    if subnet.prefixlen < SHORTEST_PREFIX:
        raise ConfigError(f"{field}: {text!r} is too large: the shortest prefix allowed "
                          f"is /{SHORTEST_PREFIX}", field)
    for block, kind in SPECIAL_BLOCKS:
        if subnet.overlaps(block):
            raise ConfigError(f"{field}: {text!r} overlaps {block}, the {kind} "
                              "addresses, which no network may use", field)
    return subnet


def make_pool(subnet: ipaddress.IPv4Network, gateway: str | None) -> Pool:
    """The pool with ``gateway`` (default: the first host address); raises ConfigError
    for a gateway that is not a host address of the subnet."""
    if gateway is None:
        return Pool(subnet, next(subnet.hosts()))
    try:
        address = ipaddress.IPv4Address(gateway)
    except ValueError:
        raise ConfigError(f"gateway: {gateway!r} is not an IPv4 address", "gateway") from None
    if address not in subnet or address in (subnet.network_address,
                                            subnet.broadcast_address):
        raise ConfigError(f"gateway: {gateway} is not a host address of {subnet}",
                          "gateway")
    return Pool(subnet, address)


def check_overlap(subnet: ipaddress.IPv4Network,
                  others: Iterable[tuple[str, ipaddress.IPv4Network]]) -> None:
    """Raise Conflict if ``subnet`` overlaps another network's, naming it."""
    for name, other in others:
        if subnet.overlaps(other):
            raise Conflict(f"subnet: {subnet} overlaps {other} of network {name!r}",
                           "subnet")


def default_subnet(taken: Collection[ipaddress.IPv4Network]) -> ipaddress.IPv4Network:
    """The first default pool that overlaps nothing taken; raises Conflict."""
    for candidate in DEFAULT_POOLS:
        if not any(candidate.overlaps(t) for t in taken):
            return candidate
    raise Conflict("subnet: every default pool is in use; give --subnet", "subnet")


def allocate(pool: Pool, used: Collection[str], network: str) -> ipaddress.IPv4Address:
    """The lowest free host address (not the gateway); raises Conflict when none is."""
    for address in pool.subnet.hosts():
        if address != pool.gateway and str(address) not in used:
            return address
    raise Conflict(f"network {network!r} ({pool.subnet}) has no free address left",
                   "network")


def check_requested(pool: Pool, address: str, used: Collection[str]) -> None:
    """A specific address asked for: in the pool, not the gateway, not taken."""
    try:
        wanted = ipaddress.IPv4Address(address)
    except ValueError:
        raise ConfigError(f"address: {address!r} is not an IPv4 address",
                          "address") from None
    if wanted not in pool.subnet or wanted in (pool.subnet.network_address,
                                               pool.subnet.broadcast_address,
                                               pool.gateway):
        raise ConfigError(f"address: {address} is not a free host address of "
                          f"{pool.subnet}", "address")
    if address in used:
        raise Conflict(f"address: {address} is already in use", "address")

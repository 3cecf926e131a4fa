"""Pure: the link operations that take a sandbox's interfaces from what they are to
what they should be, as a CNI plugin's ADD and DEL would make them.

A sandbox (a container's or a mesh workload's namespace) has one interface per
network it is on. To attach one, the network's bridge must exist (with the gateway
address unless the network is internal, and on an overlay that reaches other hosts
the host's own address there), then, on such an overlay, its VXLAN device on the
bridge, then the veth pair. Detaching removes the veth
pair; a network that no other sandbox of this host uses then loses its tunnel and its
bridge. An attach that failed part way is detached and made again, as CNI's DEL then
ADD. ``plan`` writes that order once; ``agent/host_networks.py`` applies the
operations, each of which is idempotent (what exists is kept, what is gone is fine).
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from meshlet.net.overlay_plan import mac_for


@dataclass(frozen=True)
class Network:
    """What attaching needs of a network record."""

    name: str
    driver: str
    prefix: int
    gateway: str | None  # None: internal (no address on the bridge, no default route)
    vni: int | None
    local: str | None = None  # an overlay's: this host's own address on it (``host:NODE``)

    @classmethod
    def from_record(cls, record: Mapping[str, Any]) -> Network:
        """From the API's network record (``name``, ``driver``, ``subnet``, ...)."""
        prefix = int(str(record["subnet"]).split("/")[1]) if record.get("subnet") else 0
        gateway = None if record.get("internal") else record.get("gateway")
        return cls(record["name"], record["driver"], prefix, gateway, record.get("vni"))


@dataclass(frozen=True)
class Interface:
    """A sandbox's interface on a network, as this host made it."""

    network: str
    ifname: str


@dataclass(frozen=True)
class Underlay:
    """Where this host's tunnels start: its address, and the MTU of overlay links (the
    underlay's less the tunnel headers)."""

    local: str
    mtu: int


@dataclass(frozen=True)
class EnsureBridge:
    network: str
    gateway: str | None
    prefix: int
    local: str | None = None  # the source of what the host itself sends on the network


@dataclass(frozen=True)
class EnsureTunnel:
    network: str
    vni: int
    local: str
    mtu: int


@dataclass(frozen=True)
class Attach:
    """A veth pair from the network's bridge into the sandbox."""

    network: str
    owner: str
    namespace: str
    interface: Interface
    address: str
    prefix: int
    gateway: str | None  # of the default route, when this interface gives it
    mac: str
    mtu: int | None


@dataclass(frozen=True)
class Detach:
    network: str
    owner: str


@dataclass(frozen=True)
class RemoveNetwork:
    """The network's tunnel and bridge, once no sandbox of this host uses them."""

    network: str


Op = EnsureBridge | EnsureTunnel | Attach | Detach | RemoveNetwork


def describe(op: Op) -> str:
    """What ``op`` does, for an error message: ``cannot <describe(op)>: <why>``."""
    if isinstance(op, EnsureBridge):
        return f"make the bridge of network {op.network!r}"
    if isinstance(op, EnsureTunnel):
        return f"make the tunnel of network {op.network!r}"
    if isinstance(op, Attach):
        return f"attach {op.owner!r} to network {op.network!r}"
    if isinstance(op, Detach):
        return f"detach {op.owner!r} from network {op.network!r}"
    return f"remove the bridge of network {op.network!r}"


def plan(owner: str, namespace: str, have: Sequence[Interface],
         want: Mapping[str, str], networks: Mapping[str, Network],
         used_by_others: Collection[str], underlay: Underlay | None,
         unfinished: Collection[str] = ()) -> list[Op]:
    """The operations that give sandbox ``owner`` (in ``namespace``) an interface on
    each network of ``want`` (network -> address, in interface order) and none other.

    ``have``: its interfaces now; ``networks``: the records of the networks in
    ``want``; ``used_by_others``: the networks other sandboxes of this host are on;
    ``underlay``: where tunnels start, or None when this host makes none (it is on
    loopback only); ``unfinished``: the networks of ``have`` whose attach may have
    failed part way (detached, then attached again if still wanted).
    A new interface takes the lowest free ``ethN``; the sandbox's first interface
    gives its default route (none if that network is internal). Raises KeyError for a
    network of ``want`` missing from ``networks``.
    """
    ops: list[Op] = []
    kept = [i for i in have if i.network in want and i.network not in unfinished]
    gone = [i.network for i in have if i.network not in want or i.network in unfinished]
    ops += [Detach(network, owner) for network in gone]
    ops += [RemoveNetwork(network) for network in gone
            if network not in used_by_others and network not in want]
    names = {i.ifname for i in kept}
    attached = {i.network for i in kept}
    for name, address in want.items():
        if name in attached:
            continue
        network = networks[name]
        ops += host_side(network, underlay)
        mtu = underlay.mtu if underlay is not None and network.driver == "overlay" else None
        ifname = next(f"eth{n}" for n in range(len(names) + 1) if f"eth{n}" not in names)
        gateway = network.gateway if not names else None
        names.add(ifname)
        ops.append(Attach(name, owner, namespace, Interface(name, ifname), address,
                          network.prefix, gateway, mac_for(address), mtu))
    return ops


def host_side(network: Network, underlay: Underlay | None) -> list[Op]:
    """What ``network`` needs on this host before anything is on it: its bridge (with
    the host's own address on an overlay that reaches other hosts), then such an
    overlay's tunnel. ``underlay``: as in ``plan``."""
    tunnel = underlay if network.driver == "overlay" else None
    ops: list[Op] = [EnsureBridge(network.name, network.gateway, network.prefix,
                                  network.local if tunnel is not None else None)]
    if tunnel is not None:
        assert network.vni is not None, f"overlay {network.name!r} has no VXLAN id"
        ops.append(EnsureTunnel(network.name, network.vni, tunnel.local, tunnel.mtu))
    return ops


def needs_tunnel(want: Mapping[str, str], networks: Mapping[str, Network]) -> bool:
    """Whether attaching ``want`` may need an overlay's tunnel (and so the underlay)."""
    return any(networks[n].driver == "overlay" for n in want if n in networks)

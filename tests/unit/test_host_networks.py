"""``HostNetworks`` against an in-memory kernel: sandboxes share a network's bridge
while either is on it, a failed open leaves nothing behind, rewiring and overlays
follow the plan. (tests/netns runs the same against the real kernel.)"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import pytest

from meshlet.agent.host_networks import HostNetworks
from meshlet.agent.kernel import Closable
from meshlet.agent.network_plan import (
    Attach,
    Detach,
    EnsureBridge,
    EnsureTunnel,
    Op,
    RemoveNetwork,
    describe,
)
from meshlet.errors import NetworkError
from meshlet.net.dns import Lookup, Records
from meshlet.net.overlay_plan import Remote, mac_for
from tests.unit.test_network_plan import NETWORKS


@dataclass
class Dns:
    kernel: MemoryKernel
    namespace: str

    def close(self) -> None:
        self.kernel.dns.pop(self.namespace)


@dataclass
class MemoryKernel:
    """The kernel's state as ``Kernel``'s calls leave it. Attaching to network
    ``fail_attach`` fails after it half happened (a veth made, its address refused)."""

    namespaces: dict[str, set[str]] = field(default_factory=dict)  # -> loopback
    bridges: set[str] = field(default_factory=set)
    tunnels: dict[str, tuple[int, str, int]] = field(default_factory=dict)
    links: dict[tuple[str, str], Attach] = field(default_factory=dict)
    dns: dict[str, Lookup] = field(default_factory=dict)
    entries: dict[str, set[Remote]] = field(default_factory=dict)
    fail_attach: str | None = None

    def create_namespace(self, name: str, loopback: Sequence[str]) -> None:
        self.namespaces.setdefault(name, set()).update(loopback)

    def remove_namespace(self, name: str) -> None:
        self.namespaces.pop(name, None)
        self.links = {k: a for k, a in self.links.items() if a.namespace != name}

    def apply(self, op: Op) -> None:
        if isinstance(op, EnsureBridge):
            self.bridges.add(op.network)
        elif isinstance(op, EnsureTunnel):
            assert op.network in self.bridges
            self.tunnels[op.network] = (op.vni, op.local, op.mtu)
        elif isinstance(op, Attach):
            assert op.network in self.bridges and op.namespace in self.namespaces
            self.links[op.network, op.owner] = op
        elif isinstance(op, Detach):
            self.links.pop((op.network, op.owner), None)
        elif isinstance(op, RemoveNetwork):
            self.bridges.discard(op.network)
            self.tunnels.pop(op.network, None)
            self.entries.pop(op.network, None)
        if isinstance(op, Attach) and op.network == self.fail_attach:
            raise NetworkError(f"cannot {describe(op)}: injected")

    def underlay_mtu(self, local: str) -> int:
        return 1450

    def program(self, network: str, wanted: set[Remote]) -> None:
        self.entries[network] = set(wanted)

    def remove_leftovers(self, prefix: str) -> None:
        self.namespaces = {n: lo for n, lo in self.namespaces.items()
                           if not n.startswith(prefix)}
        self.bridges.clear()

    async def serve_dns(self, namespace: str, lookup: Lookup) -> Closable:
        self.dns[namespace] = lookup
        return Dns(self, namespace)

    def empty(self) -> bool:
        return not (self.namespaces or self.bridges or self.tunnels or self.links
                    or self.dns)


def host(address: str = "127.0.0.1") -> tuple[HostNetworks, MemoryKernel]:
    kernel = MemoryKernel()
    return HostNetworks("n1", address, kernel), kernel


def nobody() -> None:
    return None


async def test_two_sandboxes_share_a_bridge_until_both_are_gone() -> None:
    networks, kernel = host()
    await networks.open("web", "ml-a-web", {"front": "10.40.0.2"}, NETWORKS, nobody)
    await networks.open("svc:n1:api-0", "ml-a-svc.api-0", {"front": "10.40.0.3"},
                        NETWORKS, nobody, ["10.99.0.2"])
    assert kernel.namespaces == {"ml-a-web": set(), "ml-a-svc.api-0": {"10.99.0.2"}}
    assert set(kernel.dns) == {"ml-a-web", "ml-a-svc.api-0"}
    assert networks.in_use() == {"front"}
    await networks.close("web")
    assert kernel.bridges == {"front"}  # api-0 is still on it
    assert set(kernel.links) == {("front", "svc:n1:api-0")}
    await networks.close("svc:n1:api-0")
    await networks.close("svc:n1:api-0")  # not open: nothing to do
    assert kernel.empty() and networks.sandboxes == {}


async def test_a_failed_open_removes_what_it_made_and_says_what_failed() -> None:
    networks, kernel = host()
    await networks.open("db", "ml-a-db", {"front": "10.40.0.9"}, NETWORKS, nobody)
    kernel.fail_attach = "back"
    with pytest.raises(NetworkError, match="cannot attach 'web' to network 'back'"):
        await networks.open("web", "ml-a-web", {"front": "10.40.0.2", "back": "10.41.0.2"},
                            NETWORKS, nobody)
    assert "web" not in networks.sandboxes and "ml-a-web" not in kernel.namespaces
    assert kernel.bridges == {"front"} and set(kernel.links) == {("front", "db")}
    await networks.close("db")
    assert kernel.empty()


async def test_connect_rewires_and_drops_the_bridge_left_unused() -> None:
    networks, kernel = host()
    await networks.open("web", "ml-a-web", {"front": "10.40.0.2"}, NETWORKS, nobody)
    await networks.connect("web", {"front": "10.40.0.2", "back": "10.41.0.2"}, NETWORKS)
    assert networks.networks_of("web") == ["front", "back"]
    assert kernel.links["back", "web"].interface.ifname == "eth1"
    await networks.connect("web", {"back": "10.41.0.2"}, NETWORKS)
    assert networks.networks_of("web") == ["back"] and kernel.bridges == {"back"}
    await networks.close("web")
    assert kernel.empty()


async def test_overlays_get_tunnels_and_the_remote_entries_of_the_view() -> None:
    networks, kernel = host("192.168.1.5")
    networks.view.set_nodes([{"name": "n1", "address": "192.168.1.5"},
                             {"name": "n2", "address": "192.168.1.6"}])
    networks.view.set_networks([{"name": "wide", "driver": "overlay", "addresses": {
        "svc:n1:web-0": "10.50.0.2", "svc:n2:api-0": "10.50.0.3"}}])
    record = {"networks": ["wide"], "addresses": {"wide": "10.50.0.2"}}
    await networks.open("svc:n1:web-0", "ml-a-svc.web-0", {"wide": "10.50.0.2"},
                        NETWORKS, lambda: record)
    assert kernel.tunnels == {"wide": (4242, "192.168.1.5", 1450)}
    assert kernel.links["wide", "svc:n1:web-0"].mtu == 1450
    await networks.program_overlays()
    assert kernel.entries == {"wide": {Remote("10.50.0.3", mac_for("10.50.0.3"),
                                              "192.168.1.6")}}
    assert kernel.dns["ml-a-svc.web-0"]("api-0") == Records(("10.50.0.3",))
    await networks.close("svc:n1:web-0")
    assert kernel.empty() and kernel.entries == {}


async def test_leftovers_of_this_node_are_removed() -> None:
    networks, kernel = host()
    kernel.namespaces = {networks.prefix + "old": set(), "ml-other-x": set()}
    kernel.bridges = {"front"}
    await networks.clean_leftovers()
    assert kernel.namespaces == {"ml-other-x": set()} and kernel.bridges == set()

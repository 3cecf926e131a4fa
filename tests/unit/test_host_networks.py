"""``HostNetworks`` against an in-memory kernel: sandboxes share a network's bridge
while either is on it, a failed open leaves nothing behind, rewiring and overlays
follow the plan, the host joins an overlay itself (for its gateways) and leaves it, a
failed step is made again by the next call, a cancelled call waits
for the kernel call it started, and a host whose preparation failed says so to those
waiting for it. (tests/netns runs the same against the real kernel.)"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

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
from tests.conftest import async_wait_until
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
    ``fail_attach`` fails after it half happened (a veth made, its address refused);
    ``complete`` holds the attachments that fully happened. Detaching from
    ``fail_detach`` and making the tunnel of ``fail_tunnel`` fail; attaching to ``hold``
    waits for ``gate``. ``overlapped`` says whether two calls ever ran at once.
    ``ports`` holds the veths a container runtime plugged into a bridge through
    meshlet-cni, which no sandbox here owns; removing ``fail_remove`` fails, and so does
    the RemoveNetwork of ``fail_remove_network``."""

    namespaces: dict[str, set[str]] = field(default_factory=dict)  # -> loopback
    bridges: set[str] = field(default_factory=set)
    tunnels: dict[str, tuple[int, str, int]] = field(default_factory=dict)
    links: dict[tuple[str, str], Attach] = field(default_factory=dict)
    dns: dict[str, Lookup] = field(default_factory=dict)
    entries: dict[str, set[Remote]] = field(default_factory=dict)
    fail_attach: str | None = None
    fail_detach: str | None = None
    fail_tunnel: str | None = None
    fail_leftovers: bool = False
    ports: dict[str, set[str]] = field(default_factory=dict)  # network -> CNI veths
    fail_remove: str | None = None
    fail_remove_network: str | None = None
    complete: set[tuple[str, str]] = field(default_factory=set)
    hold: str | None = None
    holding: bool = False
    gate: threading.Event = field(default_factory=threading.Event)
    running: int = 0
    overlapped: bool = False
    guard: threading.Lock = field(default_factory=threading.Lock)

    def create_namespace(self, name: str, loopback: Sequence[str]) -> None:
        self.namespaces.setdefault(name, set()).update(loopback)

    def remove_namespace(self, name: str) -> None:
        self.namespaces.pop(name, None)
        self.links = {k: a for k, a in self.links.items() if a.namespace != name}

    def apply(self, op: Op) -> None:
        with self.guard:
            self.overlapped = self.overlapped or self.running > 0
            self.running += 1
        try:
            if isinstance(op, Attach) and op.network == self.hold:
                self.holding = True
                self.gate.wait()
            self.change(op)
        finally:
            with self.guard:
                self.running -= 1

    def change(self, op: Op) -> None:
        if isinstance(op, Detach) and op.network == self.fail_detach:
            raise NetworkError(f"cannot {describe(op)}: injected")
        if isinstance(op, EnsureTunnel) and op.network == self.fail_tunnel:
            raise NetworkError(f"cannot {describe(op)}: injected")
        if isinstance(op, RemoveNetwork) and op.network == self.fail_remove_network:
            raise NetworkError(f"cannot {describe(op)}: injected")
        if isinstance(op, EnsureBridge):
            self.bridges.add(op.network)
        elif isinstance(op, EnsureTunnel):
            assert op.network in self.bridges
            self.tunnels[op.network] = (op.vni, op.local, op.mtu)
        elif isinstance(op, Attach):
            assert op.network in self.bridges and op.namespace in self.namespaces
            self.links[op.network, op.owner] = op
            if op.network != self.fail_attach:
                self.complete.add((op.network, op.owner))
        elif isinstance(op, Detach):
            self.links.pop((op.network, op.owner), None)
            self.complete.discard((op.network, op.owner))
        elif isinstance(op, RemoveNetwork):
            self.tunnels.pop(op.network, None)
            self.entries.pop(op.network, None)
            if not self.ports.get(op.network):  # a runtime's container is still on it
                self.bridges.discard(op.network)
        if isinstance(op, Attach) and op.network == self.fail_attach:
            raise NetworkError(f"cannot {describe(op)}: injected")

    def underlay_mtu(self, local: str) -> int:
        return 1450

    def program(self, network: str, wanted: set[Remote]) -> None:
        self.entries[network] = set(wanted)

    def remove_network(self, network: str) -> None:
        if network == self.fail_remove:
            raise NetworkError(f"cannot remove the links of removed network {network!r}: "
                               "injected")
        assert not any(n == network for n, _ in self.links), "a sandbox is on it"
        self.bridges.discard(network)
        self.tunnels.pop(network, None)
        self.entries.pop(network, None)
        self.ports.pop(network, None)

    def remove_leftovers(self, prefix: str) -> None:
        if self.fail_leftovers:
            raise NetworkError("cannot remove leftover bridge 'mlb1': injected")
        self.namespaces = {n: lo for n, lo in self.namespaces.items()
                           if not n.startswith(prefix)}
        self.links = {k: a for k, a in self.links.items() if a.namespace in self.namespaces}
        self.bridges.clear()
        self.tunnels.clear()
        self.ports.clear()

    async def serve_dns(self, namespace: str, lookup: Lookup) -> Closable:
        self.dns[namespace] = lookup
        return Dns(self, namespace)

    def empty(self) -> bool:
        return not (self.namespaces or self.bridges or self.tunnels or self.links
                    or self.dns or self.ports)


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


async def test_a_tunnel_made_for_a_sandbox_has_the_views_entries_at_once() -> None:
    # No watch answer need come after the sandbox opens: its host reaches the other
    # hosts' workloads as soon as the tunnel exists (made again after its last
    # sandbox closed, say).
    networks, kernel = host("192.168.1.5")
    networks.view.set_nodes([{"name": "n1", "address": "192.168.1.5"},
                             {"name": "n2", "address": "192.168.1.6"}])
    networks.view.set_networks([{"name": "wide", "driver": "overlay", "addresses": {
        "svc:n1:web-0": "10.50.0.2", "svc:n2:api-0": "10.50.0.3"}}])
    await networks.open("svc:n1:web-0", "ml-a-svc.web-0", {"wide": "10.50.0.2"},
                        NETWORKS, nobody)
    assert kernel.entries == {"wide": {Remote("10.50.0.3", mac_for("10.50.0.3"),
                                              "192.168.1.6")}}


def wide_view(networks: HostNetworks) -> None:
    """n1 (this host) and n2, and a workload of overlay ``wide`` on n2 only."""
    networks.view.set_nodes([{"name": "n1", "address": "192.168.1.5"},
                             {"name": "n2", "address": "192.168.1.6"}])
    networks.view.set_networks([{"name": "wide", "driver": "overlay", "addresses": {
        "host:n1": "10.50.0.9", "svc:n2:api-0": "10.50.0.3"}}])


async def test_a_host_joins_an_overlay_without_a_sandbox_and_leaves_it() -> None:
    # A gateway in the agent reaches the overlay's workloads on other hosts.
    networks, kernel = host("192.168.1.5")
    wide_view(networks)
    await networks.join(replace(NETWORKS["wide"], local="10.50.0.9"))
    await networks.join(replace(NETWORKS["wide"], local="10.50.0.9"))  # joined: no-op
    assert kernel.bridges == {"wide"} and kernel.namespaces == {} and kernel.links == {}
    assert kernel.tunnels == {"wide": (4242, "192.168.1.5", 1450)}
    assert kernel.entries == {"wide": {Remote("10.50.0.3", mac_for("10.50.0.3"),
                                              "192.168.1.6")}}
    assert networks.in_use() == {"wide"}
    await networks.leave("wide")
    await networks.leave("wide")  # not joined: nothing to do
    assert kernel.empty() and networks.in_use() == set()


async def test_a_joined_overlay_outlives_its_last_sandbox_and_the_other_way_round() -> None:
    networks, kernel = host("192.168.1.5")
    wide_view(networks)
    await networks.open("svc:n1:web-0", "ml-a-svc.web-0", {"wide": "10.50.0.2"},
                        NETWORKS, nobody)
    await networks.join(replace(NETWORKS["wide"], local="10.50.0.9"))
    await networks.close("svc:n1:web-0")
    assert kernel.bridges == {"wide"} and "wide" in kernel.tunnels  # the host is on it
    await networks.open("svc:n1:web-1", "ml-a-svc.web-1", {"wide": "10.50.0.4"},
                        NETWORKS, nobody)
    await networks.leave("wide")
    assert kernel.bridges == {"wide"} and "wide" in kernel.tunnels  # web-1 is on it
    await networks.close("svc:n1:web-1")
    assert kernel.empty()


async def test_a_failed_join_leaves_nothing_and_the_next_one_makes_it() -> None:
    networks, kernel = host("192.168.1.5")
    wide_view(networks)
    kernel.fail_tunnel = "wide"
    with pytest.raises(NetworkError, match="cannot make the tunnel of network 'wide'"):
        await networks.join(replace(NETWORKS["wide"], local="10.50.0.9"))
    assert kernel.empty() and networks.in_use() == set()
    kernel.fail_tunnel = None
    await networks.join(replace(NETWORKS["wide"], local="10.50.0.9"))
    assert kernel.bridges == {"wide"} and "wide" in kernel.tunnels


async def test_a_failed_leave_stays_joined_and_the_next_one_leaves() -> None:
    networks, kernel = host("192.168.1.5")
    wide_view(networks)
    await networks.join(replace(NETWORKS["wide"], local="10.50.0.9"))
    kernel.fail_remove_network = "wide"
    with pytest.raises(NetworkError, match="cannot remove the bridge of network 'wide'"):
        await networks.leave("wide")
    assert networks.in_use() == {"wide"}  # its entries are still kept current
    kernel.fail_remove_network = None
    await networks.leave("wide")
    assert kernel.empty() and networks.in_use() == set()


async def test_a_host_on_loopback_only_joins_nothing() -> None:
    networks, kernel = host()  # one host: every workload is local
    await networks.join(replace(NETWORKS["wide"], local="10.50.0.9"))
    assert kernel.empty() and networks.in_use() == set()


async def test_a_joined_network_removed_from_the_cluster_loses_its_links() -> None:
    networks, kernel = host("192.168.1.5")
    wide_view(networks)
    networks.set_networks([{"name": "wide", "driver": "overlay", "addresses": {}}])
    await networks.join(replace(NETWORKS["wide"], local="10.50.0.9"))
    networks.set_networks([])
    await networks.remove_gone_networks()
    assert kernel.empty() and networks.in_use() == set()


async def test_leftovers_of_this_node_are_removed() -> None:
    networks, kernel = host()
    kernel.namespaces = {networks.prefix + "old": set(), "ml-other-x": set()}
    kernel.bridges = {"front"}
    await networks.clean_leftovers()
    assert kernel.namespaces == {"ml-other-x": set()} and kernel.bridges == set()


def records(*names: str) -> list[dict[str, object]]:
    """A networks watch answer holding ``names``."""
    return [{"name": n, "driver": "bridge", "addresses": {}} for n in names]


async def test_a_sandboxs_last_close_keeps_the_bridge_a_runtimes_container_is_on() -> None:
    networks, kernel = host()
    await networks.open("web", "ml-a-web", {"front": "10.40.0.2"}, NETWORKS, nobody)
    kernel.ports["front"] = {"mlvpodman"}  # podman's container, through meshlet-cni
    await networks.close("web")
    assert kernel.bridges == {"front"} and kernel.links == {}


async def test_a_network_removed_from_the_cluster_loses_the_links_meshlet_cni_made() -> None:
    """Whoever made them: podman's DEL came (a bridge with no port left), or never
    did (its veth still on the bridge)."""
    networks, kernel = host()
    kernel.bridges = {"front", "back", "vault"}
    kernel.ports = {"back": {"mlvkilled"}}
    networks.set_networks(records("front", "back"))
    await networks.remove_gone_networks()  # the first answer: nothing is gone yet
    assert kernel.bridges == {"front", "back", "vault"}
    networks.set_networks(records("vault"))  # made again meanwhile: kept
    await networks.remove_gone_networks()
    assert kernel.bridges == {"vault"} and kernel.ports == {}
    assert networks.gone == set()


async def test_a_removed_network_a_sandbox_is_still_on_waits_and_a_failure_is_retried(
        ) -> None:
    networks, kernel = host()
    await networks.open("web", "ml-a-web", {"front": "10.40.0.2"}, NETWORKS, nobody)
    kernel.bridges.add("back")
    kernel.ports = {"front": {"mlvcni"}}
    networks.set_networks(records("front", "back"))
    networks.set_networks(records())
    kernel.fail_remove = "back"
    with pytest.raises(NetworkError, match="removed network 'back': injected"):
        await networks.remove_gone_networks()
    assert kernel.bridges == {"front", "back"} and networks.gone == {"front", "back"}
    kernel.fail_remove = None
    await networks.close("web")  # its bridge stays: the runtime's veth is on it
    assert kernel.bridges == {"front", "back"}
    await networks.remove_gone_networks()
    assert kernel.empty() and networks.gone == set()


async def test_clear_removes_every_link_left_on_the_host() -> None:
    networks, kernel = host()
    await networks.open("web", "ml-a-web", {"front": "10.40.0.2"}, NETWORKS, nobody)
    await networks.close("web")
    kernel.bridges, kernel.ports = {"back"}, {"back": {"mlvcni"}}
    kernel.namespaces[networks.prefix + "stuck"] = set()
    await networks.clear()
    assert kernel.empty()


async def test_a_failed_attach_is_made_again_by_the_next_connect() -> None:
    networks, kernel = host()
    await networks.open("web", "ml-a-web", {"front": "10.40.0.2"}, NETWORKS, nobody)
    want = {"front": "10.40.0.2", "back": "10.41.0.2"}
    kernel.fail_attach = "back"
    with pytest.raises(NetworkError, match="cannot attach 'web' to network 'back'"):
        await networks.connect("web", want, NETWORKS)
    # A reconcile comparing networks sees that back is missing, and connects again.
    assert networks.networks_of("web") == ["front"]
    assert "back" in networks.in_use()  # the half-made one still holds its bridge
    kernel.fail_attach = None
    await networks.connect("web", want, NETWORKS)
    assert networks.networks_of("web") == ["front", "back"]
    assert kernel.complete == {("front", "web"), ("back", "web")}
    assert kernel.links["back", "web"].interface.ifname == "eth1"
    await networks.close("web")
    assert kernel.empty()


async def closed_in_vain() -> tuple[HostNetworks, MemoryKernel]:
    """Sandbox web on front, whose close failed: its detach is refused."""
    networks, kernel = host()
    await networks.open("web", "ml-a-web", {"front": "10.40.0.2"}, NETWORKS, nobody)
    kernel.fail_detach = "front"
    with pytest.raises(NetworkError, match="cannot detach 'web' from network 'front'"):
        await networks.close("web")
    return networks, kernel


async def test_a_failed_close_keeps_the_record_and_is_finished_by_the_next_call() -> None:
    networks, kernel = await closed_in_vain()
    assert "web" in networks.sandboxes  # what it names is still in the kernel
    assert networks.networks_of("web") == []  # closing: on no network any more
    assert kernel.bridges == {"front"} and "ml-a-web" in kernel.namespaces
    kernel.fail_detach = None
    await networks.open("db", "ml-a-db", {"back": "10.41.0.9"}, NETWORKS, nobody)
    assert set(networks.sandboxes) == {"db"}  # the other's open finished the close first
    assert "ml-a-web" not in kernel.namespaces and kernel.bridges == {"back"}
    await networks.close("db")
    assert kernel.empty()


async def test_an_owner_closing_in_vain_is_closed_before_it_opens_again() -> None:
    networks, kernel = await closed_in_vain()
    with pytest.raises(NetworkError, match="cannot detach 'web'"):  # still failing
        await networks.open("web", "ml-a-web", {"back": "10.41.0.2"}, NETWORKS, nobody)
    kernel.fail_detach = None
    await networks.open("web", "ml-a-web", {"back": "10.41.0.2"}, NETWORKS, nobody)
    assert networks.networks_of("web") == ["back"] and kernel.bridges == {"back"}
    await networks.close("web")
    assert kernel.empty()


async def test_a_failed_tunnel_rolls_back_the_bridge_made_for_it() -> None:
    networks, kernel = host("192.168.1.5")
    await networks.open("web", "ml-a-web", {"front": "10.40.0.2"}, NETWORKS, nobody)
    kernel.fail_tunnel = "wide"
    with pytest.raises(NetworkError, match="cannot make the tunnel of network 'wide'"):
        await networks.connect("web", {"front": "10.40.0.2", "wide": "10.50.0.2"},
                               NETWORKS)
    assert kernel.bridges == {"front"} and networks.in_use() == {"front"}
    await networks.close("web")
    assert kernel.empty()


async def test_a_cancelled_open_waits_for_the_kernel_call_it_started(
        caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="meshlet.agent.kernel")
    networks, kernel = host()
    kernel.hold = "front"
    task = asyncio.ensure_future(
        networks.open("web", "ml-a-web", {"front": "10.40.0.2"}, NETWORKS, nobody))
    await async_wait_until(lambda: asyncio.sleep(0, kernel.holding),
                           message="the attach to be running")
    task.cancel()  # a workload stopping while its sandbox is being made
    # The attach cannot be stopped: either the rollback starts beside it (the bug) or
    # the cancelled open says it waits for it to end.
    await async_wait_until(lambda: asyncio.sleep(0, kernel.overlapped
                                                 or "waiting for it to end" in caplog.text))
    kernel.gate.set()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert not kernel.overlapped  # nothing undid it while it ran
    assert kernel.empty() and networks.sandboxes == {}  # then everything was removed


async def test_a_host_whose_preparation_failed_says_so_to_every_waiter(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    from meshlet.agent.agent import Agent
    agent = Agent("http://127.0.0.1:9", tmp_path, advertise="127.0.0.1")
    kernel = MemoryKernel(fail_leftovers=True)
    agent.networks.kernel = kernel
    try:
        waiters = [asyncio.ensure_future(agent.networks.wait_ready()) for _ in range(2)]
        await agent.prepare_host()
        for waiter in waiters:  # bounded: they fail, not hang
            with pytest.raises(NetworkError, match="cannot remove leftover bridge"):
                await asyncio.wait_for(waiter, 10)
        with pytest.raises(NetworkError, match="this host's networks are not ready"):
            await networks_open(agent.networks)
        assert kernel.namespaces == {}  # nothing was made
        failures = [r for r in caplog.records if "preparing this host" in r.getMessage()]
        assert len(failures) == 1  # logged once, however many wait
    finally:
        await agent.client.close()


async def networks_open(networks: HostNetworks) -> None:
    await networks.open("web", "ml-a-web", {"front": "10.40.0.2"}, NETWORKS, nobody)

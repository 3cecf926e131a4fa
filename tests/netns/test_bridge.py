"""The bridge driver on real namespaces, links and sockets (needs root): workloads on
one network reach each other, networks are isolated unless a workload joins both, an
internal network has no way out, removal leaves nothing behind, and a bridge that
fails part way is not left half made."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from meshlet.agent.kernel import LinuxKernel
from meshlet.agent.network_plan import EnsureBridge
from meshlet.errors import NetworkError
from meshlet.net import bridge, netns
from meshlet.state import StateMachine
from meshlet.state.commands import AddressAssign, Command, NetworkCreate

pytestmark = pytest.mark.skipif(os.geteuid() != 0,
                                reason="needs root: creates network namespaces and links")

SERVE = ("import socket,sys; s=socket.socket(); s.setsockopt(socket.SOL_SOCKET,"
         "socket.SO_REUSEADDR,1); s.bind(('0.0.0.0',7000)); s.listen(); print('up',flush=True)"
         "\nwhile True:\n c,_=s.accept(); c.sendall(b'hi from '+sys.argv[1].encode()); c.close()")
DIAL = ("import socket,sys; c=socket.create_connection((sys.argv[1],7000),timeout=1);"
        "print(c.recv(100).decode())")
NETWORKS = {"t-front": "10.201.0.0/24", "t-back": "10.202.0.0/24", "t-priv": "10.203.0.0/24"}
JOINS = {"a": ["t-front"], "b": ["t-front"], "c": ["t-back"], "d": ["t-front", "t-back"],
         "e": ["t-priv"]}


class Lab:
    """Namespaces ml-t-a … ml-t-e joined to the test networks as JOINS says."""

    def __init__(self) -> None:
        self.sm = StateMachine()
        self.index = 0
        self.addresses: dict[tuple[str, str], str] = {}
        self.servers: list[subprocess.Popen[str]] = []

    def apply(self, command: Command) -> dict[str, object]:
        self.index += 1
        result = self.sm.apply(self.index, command)
        assert result.error is None, result.error
        return result.value  # type: ignore[no-any-return]

    def build(self) -> None:
        for name, subnet in NETWORKS.items():
            net = self.apply(NetworkCreate(name, subnet=subnet, internal=name == "t-priv"))
            bridge.ensure_bridge(name, None if net["internal"] else str(net["gateway"]),
                                 24)
        for workload, networks in JOINS.items():
            ns = f"ml-t-{workload}"
            netns.create(ns)
            for i, network in enumerate(networks):
                got = self.apply(AddressAssign(network, workload))
                self.addresses[(workload, network)] = str(got["address"])
                bridge.attach(bridge.Attachment(
                    network, workload, ns, f"eth{i}", str(got["address"]), 24,
                    str(got["gateway"]) if got["gateway"] and i == 0 else None))

    def serve(self, workload: str) -> None:
        proc = subprocess.Popen(["ip", "netns", "exec", f"ml-t-{workload}", sys.executable,
                                 "-c", SERVE, workload], stdout=subprocess.PIPE, text=True)
        assert proc.stdout is not None and proc.stdout.readline().strip() == "up"
        self.servers.append(proc)

    def dial(self, workload: str, address: str) -> str | None:
        out = subprocess.run(["ip", "netns", "exec", f"ml-t-{workload}", sys.executable,
                              "-c", DIAL, address], capture_output=True, text=True,
                             timeout=30, check=False)
        return out.stdout.strip() if out.returncode == 0 else None

    def teardown(self) -> None:
        for proc in self.servers:
            proc.kill()
            proc.wait()
        for workload, networks in JOINS.items():
            for network in networks:
                bridge.detach(network, workload)
            netns.remove(f"ml-t-{workload}")
        for name in NETWORKS:
            bridge.remove_bridge(name)


def ip(*args: str) -> str:
    return subprocess.run(["ip", *args], capture_output=True, text=True, check=True).stdout


def leftovers() -> list[str]:
    links = ip("-o", "link")
    ours = [line.split(":")[1].strip().split("@")[0] for line in links.splitlines()
            if any(f" {p}" in line for p in (bridge.BRIDGE_PREFIX, bridge.VETH_PREFIX))]
    spaces = [n for n in netns.ours() if n.startswith("ml-t-")]
    return ours + spaces


@pytest.fixture
def lab() -> Iterator[Lab]:
    """Built on a host that forwards IPv4, as a Docker host does: isolation must not
    depend on forwarding being off everywhere."""
    forward = Path("/proc/sys/net/ipv4/ip_forward")
    before = forward.read_text()
    forward.write_text("1")
    lab = Lab()
    try:
        lab.build()
        yield lab
    finally:
        lab.teardown()
        forward.write_text(before)
    assert leftovers() == []


def test_reachability_isolation_and_internal(lab: Lab) -> None:
    for workload in ("a", "c", "e"):
        lab.serve(workload)
    a_front = lab.addresses[("a", "t-front")]
    c_back = lab.addresses[("c", "t-back")]
    # Same network: reachable. The host reaches it through the gateway too.
    assert lab.dial("b", a_front) == "hi from a"
    with socket.create_connection((a_front, 7000), timeout=5) as conn:
        assert conn.recv(100) == b"hi from a"
    assert lab.dial("d", a_front) == "hi from a"
    # Connected to both networks: reaches both.
    assert lab.dial("d", c_back) == "hi from c"
    # Different networks: isolated, even with a default route via the gateway.
    assert lab.dial("a", c_back) is None
    assert lab.dial("c", a_front) is None
    # Internal: no default route, and nothing outside its subnet answers.
    routes = ip("-n", "ml-t-e", "route")
    assert "default" not in routes and "10.203.0.0/24" in routes
    assert lab.dial("a", lab.addresses[("e", "t-priv")]) is None

    inside = ip("-n", "ml-t-d", "-o", "-4", "addr")
    assert f"eth0    inet {lab.addresses[('d', 't-front')]}/24" in inside
    assert f"eth1    inet {lab.addresses[('d', 't-back')]}/24" in inside
    assert "lo    inet 127.0.0.1/8" in inside
    default = ip("-n", "ml-t-a", "route", "show", "default")
    assert "via 10.201.0.1 dev eth0" in default


def test_a_bridge_that_fails_part_way_is_removed_again() -> None:
    name = bridge.bridge_name("t-half")
    try:
        # The kernel makes the bridge, then refuses the gateway's /33 (EINVAL).
        with pytest.raises(NetworkError, match="cannot make the bridge of network 't-half'"):
            LinuxKernel().apply(EnsureBridge("t-half", "10.204.0.1", 33))
        assert name not in bridge.ours()  # not left behind, half made
        # A bridge that was there already is kept when a step fails on it.
        bridge.ensure_bridge("t-half", None, 24)
        with pytest.raises(NetworkError):
            LinuxKernel().apply(EnsureBridge("t-half", "10.204.0.1", 33))
        assert name in bridge.ours()
    finally:
        bridge.remove_bridge("t-half")
    assert leftovers() == []


def test_the_bridge_keeps_its_address_as_ports_join() -> None:
    """A bridge left to itself takes the lowest MAC of its ports: the gateway address
    the workloads have cached would change when one with a lower MAC joins."""
    sm, ns = StateMachine(), "ml-t-mac"
    assert sm.apply(1, NetworkCreate("t-mac", subnet="10.205.0.0/24")).error is None
    got = sm.apply(2, AddressAssign("t-mac", "w")).value
    name = bridge.bridge_name("t-mac")
    try:
        bridge.ensure_bridge("t-mac", str(got["gateway"]), 24)
        before = link_address(name)
        netns.create(ns)
        bridge.attach(bridge.Attachment("t-mac", "w", ns, "eth0", str(got["address"]), 24,
                                        str(got["gateway"])))
        ip("link", "set", bridge.veth_name("t-mac", "w"), "address", "02:00:00:00:00:01")
        assert link_address(name) == before
        bridge.ensure_bridge("t-mac", str(got["gateway"]), 24)  # again: nothing changes
        assert link_address(name) == before
    finally:
        bridge.detach("t-mac", "w")
        netns.remove(ns)
        bridge.remove_bridge("t-mac")
    assert leftovers() == []


def link_address(name: str) -> str:
    return ip("-o", "link", "show", name).split("link/ether ")[1].split()[0]

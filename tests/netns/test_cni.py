"""`meshlet-cni` against the reference `bridge` + `host-local` plugins (Debian's
containernetworking-plugins) on equivalent configurations (needs root): what each
creates (interfaces, addresses, routes), the result JSON's shape, CHECK, DEL twice,
VERSION and errors; the host's own namespace refused; an ADD that fails part-way (the
kernel refusing a link change, after the veth pair was made or before) undone whole."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from meshlet.net import bridge, netns
from meshlet.net.cni import call
from tests.conftest import management_token
from tests.e2e.helpers import free_port, meshlet, wait_for
from tests.netns.helpers import leftovers

REFERENCE = Path("/usr/lib/cni")
PLUGIN = Path(sys.executable).parent / "meshlet-cni"
pytestmark = [
    pytest.mark.skipif(os.geteuid() != 0,
                       reason="needs root: creates network namespaces and links"),
    pytest.mark.skipif(not (REFERENCE / "bridge").exists(),
                       reason="needs the reference CNI plugins: apt-get install "
                              "containernetworking-plugins (.ci/run does)"),
]


def invoke(plugin: Path, command: str, config: dict[str, Any], ns: str | None,
           container: str = "c1", ifname: str = "eth0") -> tuple[int, Any]:
    """Run a plugin as a runtime does; ``ns`` is a name in /run/netns, or a path."""
    env = {"PATH": os.environ["PATH"], "CNI_COMMAND": command, "CNI_CONTAINERID": container,
           "CNI_IFNAME": ifname, "CNI_PATH": str(REFERENCE)}
    if ns is not None:
        env["CNI_NETNS"] = ns if ns.startswith("/") else f"/run/netns/{ns}"
    out = subprocess.run([str(plugin)], input=json.dumps(config), capture_output=True,
                         text=True, env=env, timeout=60, check=False)
    if plugin == PLUGIN:  # every answer is JSON on stdout; nothing else, no traceback
        assert out.stderr == "", out.stderr
    return out.returncode, json.loads(out.stdout) if out.stdout.strip() else None


def inside(ns: str, *args: str) -> str:
    return subprocess.run(["ip", "-n", ns, *args], capture_output=True, text=True,
                          check=True).stdout


@pytest.fixture
def server(tmp_path: Path) -> Iterator[str]:
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "meshlet", "server", "--data-dir",
                             str(tmp_path / "data"), "--http", f"127.0.0.1:{port}"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    addr = f"http://127.0.0.1:{port}"
    namespaces = ["ml-cni-ours", "ml-cni-ref", "ml-cni-other"]
    try:
        wait_for(lambda: meshlet("--addr", addr, "status", home=tmp_path,
                                 check=False).returncode == 0, 20, "the server")
        meshlet("--addr", addr, "network", "create", "cninet", "--subnet",
                "10.231.0.0/24", home=tmp_path)
        for ns in namespaces:
            netns.create(ns)
        yield addr
    finally:
        proc.terminate()
        proc.wait(10)
        for ns in namespaces:
            netns.remove(ns)
        bridge.delete_link("mlcniref0")
        bridge.remove_bridge("cninet")
        shutil.rmtree("/var/lib/cni/networks/refnet", ignore_errors=True)


def shape(result: dict[str, Any]) -> Any:
    """What must match between the two plugins' results (names and MACs differ)."""
    return {"keys": sorted(k for k in result if k != "dns"),
            "interfaces": [(sorted(i), "sandbox" in i) for i in result["interfaces"]],
            "ips": [(sorted(ip), ip["address"].split("/")[1], ip["interface"])
                    for ip in result["ips"]],
            "routes": [r["dst"] for r in result["routes"]]}


@pytest.fixture
def token(server: str, tmp_path: Path) -> str:
    """The server's management token, which the plugin's configuration carries."""
    return management_token(tmp_path / "data")


def test_meshlet_cni_matches_the_reference_bridge_plugin(server: str, token: str) -> None:
    ours = {"cniVersion": "1.0.0", "name": "cninet", "type": "meshlet", "server": server,
            "token": token}
    ref = {"cniVersion": "1.0.0", "name": "refnet", "type": "bridge",
           "bridge": "mlcniref0", "isGateway": True,
           "ipam": {"type": "host-local", "subnet": "10.232.0.0/24",
                    "routes": [{"dst": "0.0.0.0/0"}]}}
    code, mine = invoke(PLUGIN, "ADD", ours, "ml-cni-ours")
    assert code == 0, mine
    code, theirs = invoke(REFERENCE / "bridge", "ADD", ref, "ml-cni-ref")
    assert code == 0, theirs
    assert shape(mine) == shape(theirs)
    assert mine["ips"][0]["address"] == "10.231.0.2/24"
    assert mine["ips"][0]["gateway"] == "10.231.0.1"
    assert mine["interfaces"][2]["sandbox"] == "/run/netns/ml-cni-ours"

    # The same things exist inside each namespace: the interface, its address and the
    # default route through the gateway on the bridge.
    for ns, net in (("ml-cni-ours", "10.231.0"), ("ml-cni-ref", "10.232.0")):
        assert f"inet {net}.2/24" in inside(ns, "-4", "-o", "addr", "show", "eth0")
        assert f"default via {net}.1 dev eth0" in inside(ns, "route")
    host = subprocess.run(["ip", "-4", "-o", "addr"], capture_output=True, text=True,
                          check=True).stdout
    assert "inet 10.231.0.1/24" in host and "inet 10.232.0.1/24" in host

    # A second ADD for the same interface is an error, as the spec requires.
    code, again = invoke(PLUGIN, "ADD", ours, "ml-cni-ours")
    assert code != 0 and again["msg"] == "interface exists"

    for plugin, config in ((PLUGIN, ours), (REFERENCE / "bridge", ref)):
        prev = mine if plugin == PLUGIN else theirs
        code, out = invoke(plugin, "CHECK", {**config, "prevResult": prev},
                           "ml-cni-ours" if plugin == PLUGIN else "ml-cni-ref")
        assert code == 0, out

    for _ in range(2):  # DEL is idempotent
        code, out = invoke(PLUGIN, "DEL", {**ours, "prevResult": mine}, "ml-cni-ours")
        assert code == 0, out
        code, out = invoke(REFERENCE / "bridge", "DEL", {**ref, "prevResult": theirs},
                           "ml-cni-ref")
        assert code == 0, out
    assert "eth0" not in inside("ml-cni-ours", "link")
    assert "eth0" not in inside("ml-cni-ref", "link")
    net = json.loads(meshlet("--addr", server, "--token", token, "-o", "json", "network",
                             "inspect", "cninet", home=Path("/tmp")).stdout)
    assert net["addresses"] == {}  # the address went back to the pool
    code, out = invoke(PLUGIN, "DEL", ours, None)  # no namespace at all: still fine
    assert code == 0, out


def test_version_and_errors(server: str, token: str, tmp_path: Path) -> None:
    ours = {"cniVersion": "1.0.0", "name": "cninet", "type": "meshlet", "server": server,
            "token": token}
    code, version = invoke(PLUGIN, "VERSION", {"cniVersion": "1.0.0"}, None)
    _, reference = invoke(REFERENCE / "bridge", "VERSION", {"cniVersion": "1.0.0"}, None)
    assert code == 0 and sorted(version) == sorted(reference) == ["cniVersion",
                                                                  "supportedVersions"]
    assert "1.0.0" in version["supportedVersions"]
    os.mkfifo(tmp_path / "fifo")
    cases = [
        ({**ours, "cniVersion": "9.9.9"}, "ml-cni-ours", "eth0", 1),
        ({**ours, "name": "nowhere"}, "ml-cni-ours", "eth0", 7),
        ({**ours, "ipam": {"type": "host-local"}}, "ml-cni-ours", "eth0", 2),
        (ours, "ml-cni-missing", "eth0", 3),   # no such namespace
        (ours, None, "eth0", 4),               # ADD without CNI_NETNS
        (ours, "ml-cni-ours", "a" * 16, 4),    # longer than IFNAMSIZ - 1
        (ours, "ml-cni-ours", "../x", 4),
        (ours, "/etc/hostname", "eth0", 4),    # a file, not a network namespace
        (ours, "/dev/null", "eth0", 4),        # a device
        (ours, str(tmp_path / "fifo"), "eth0", 4),  # would block an open for reading
        (ours, "/proc/self/ns/uts", "eth0", 4),  # a namespace, but not a network one
        ({**ours, "server": "http://127.0.0.1:1"}, "ml-cni-ours", "eth0", 11),
    ]
    for config, ns, ifname, expected in cases:
        code, error = invoke(PLUGIN, "ADD", config, ns, ifname=ifname)
        assert code != 0 and error["code"] == expected, error
        assert sorted(error) == ["cniVersion", "code", "details", "msg"]
    assert "eth0" not in inside("ml-cni-ours", "link")
    assert leases(server, token) == {}


def leases(server: str, token: str) -> dict[str, str]:
    net = json.loads(meshlet("--addr", server, "--token", token, "-o", "json", "network",
                             "inspect", "cninet", home=Path("/tmp")).stdout)
    return dict(net["addresses"])


def host_links() -> str:
    return subprocess.run(["ip", "-o", "link"], capture_output=True, text=True,
                          check=True).stdout


def link_names(ns: str | None = None) -> list[str]:
    out = inside(ns, "-o", "link") if ns else host_links()
    return sorted(line.split(": ")[1].split("@")[0] for line in out.splitlines())


def test_the_hosts_own_namespace_is_refused(server: str, token: str) -> None:
    ours = {"cniVersion": "1.0.0", "name": "cninet", "type": "meshlet", "server": server,
            "token": token}
    # A name in /run/netns for this process's namespace, the host's, as a runtime
    # might be handed one by mistake (`ip netns attach NAME PID`).
    subprocess.run(["ip", "netns", "attach", "ml-cni-host", str(os.getpid())], check=True)
    try:
        before = link_names()
        paths = ["/run/netns/ml-cni-host", "/proc/self/ns/net",
                 *(["/proc/1/ns/net"] if os.access("/proc/1/ns/net", os.R_OK) else [])]
        for path in paths:
            code, error = invoke(PLUGIN, "ADD", ours, path)
            assert code != 0 and error["code"] == 4, error
            assert "host's own network namespace" in error["details"]
            code, error = invoke(PLUGIN, "CHECK", {**ours, "prevResult": {"ips": []}}, path)
            assert code != 0 and error["code"] == 4, error
        assert link_names() == before and leases(server, token) == {}
    finally:
        subprocess.run(["ip", "netns", "delete", "ml-cni-host"], check=True)  # the name only


def test_a_failed_add_leaves_no_link_no_change_and_no_lease(server: str, token: str) -> None:
    """Two real refusals by the kernel: a link of the veth peer's name already in the
    namespace (the pair cannot be made), and a link of the bridge's name that is no
    bridge but a veth (the pair is made, then cannot be plugged into it)."""
    ours = {"cniVersion": "1.0.0", "name": "cninet", "type": "meshlet", "server": server,
            "token": token}
    peer = bridge.short("mlp", "cninet", "cni-c1-eth0")
    fake_bridge = bridge.bridge_name("cninet")
    subprocess.run(["ip", "-n", "ml-cni-ours", "link", "add", peer, "type", "veth", "peer",
                    "name", "squatter"], check=True)
    host_before, ns_before = leftovers(), link_names("ml-cni-ours")
    code, error = invoke(PLUGIN, "ADD", ours, "ml-cni-ours")
    assert code != 0 and error["code"] == 100, error
    assert "not undone" not in error["details"]
    assert leftovers() == host_before and bridge.ours() == []  # its bridge is gone too
    assert link_names("ml-cni-ours") == ns_before and leases(server, token) == {}
    subprocess.run(["ip", "-n", "ml-cni-ours", "link", "del", peer], check=True)

    subprocess.run(["ip", "link", "add", fake_bridge, "type", "veth", "peer", "name",
                    "mlcnisquat0"], check=True)
    try:
        subprocess.run(["ip", "addr", "add", "10.231.0.1/24", "dev", fake_bridge],
                       check=True)
        host_before, ns_before = link_names(), link_names("ml-cni-ours")
        code, error = invoke(PLUGIN, "ADD", ours, "ml-cni-ours")
        assert code != 0 and error["code"] == 100, error
        assert link_names() == host_before   # the veth pair made is gone
        assert link_names("ml-cni-ours") == ns_before and leases(server, token) == {}
    finally:
        bridge.delete_link(fake_bridge)

    # What the failures left is usable: the next ADD gets the first address again.
    code, result = invoke(PLUGIN, "ADD", ours, "ml-cni-ours")
    assert code == 0 and result["ips"][0]["address"] == "10.231.0.2/24", result
    code, _ = invoke(PLUGIN, "DEL", ours, "ml-cni-ours")
    assert code == 0 and leases(server, token) == {}


def test_a_second_add_of_an_attached_interface_is_refused_and_undoes_nothing(
        server: str, token: str) -> None:
    """ADD c1/eth0 into one namespace, then c1/eth0 again into another: refused (103)
    before anything is made, and the first keeps its interface and its lease, both
    while the lease is held and once only its host-side veth is left."""
    ours = {"cniVersion": "1.0.0", "name": "cninet", "type": "meshlet", "server": server,
            "token": token}
    code, first = invoke(PLUGIN, "ADD", ours, "ml-cni-ours")
    assert code == 0, first
    held = leases(server, token)
    assert held == {"cni-c1-eth0": "10.231.0.2"}
    host_before, other_before = link_names(), link_names("ml-cni-other")

    def refused_and_first_intact(lease: dict[str, str], why: str) -> None:
        code, error = invoke(PLUGIN, "ADD", ours, "ml-cni-other")
        assert code != 0 and error["code"] == 103 and error["msg"] == "already attached"
        assert why in error["details"] and sorted(error) == ["cniVersion", "code",
                                                             "details", "msg"]
        assert "inet 10.231.0.2/24" in inside("ml-cni-ours", "-4", "-o", "addr", "show",
                                              "eth0")
        assert link_names() == host_before and link_names("ml-cni-other") == other_before
        assert leases(server, token) == lease

    refused_and_first_intact(held, "already holds 10.231.0.2")
    # The lease released behind the plugin's back (an operator, a lost DEL answer):
    # the veth still tells the interface is attached.
    call(server, "DELETE", "/v1/networks/cninet/addresses/cni-c1-eth0", token)
    refused_and_first_intact({}, "exists already")

    code, out = invoke(PLUGIN, "DEL", ours, "ml-cni-ours")
    assert code == 0, out
    assert "eth0" not in inside("ml-cni-ours", "link") and leases(server, token) == {}

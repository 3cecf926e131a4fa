"""`meshlet-cni` against the reference `bridge` + `host-local` plugins (Debian's
containernetworking-plugins) on equivalent configurations (needs root): what each
creates (interfaces, addresses, routes), the result JSON's shape, CHECK, DEL twice,
VERSION and errors."""

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
from tests.conftest import management_token
from tests.e2e.helpers import free_port, meshlet, wait_for

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
    env = {"PATH": os.environ["PATH"], "CNI_COMMAND": command, "CNI_CONTAINERID": container,
           "CNI_IFNAME": ifname, "CNI_PATH": str(REFERENCE)}
    if ns is not None:
        env["CNI_NETNS"] = f"/run/netns/{ns}"
    out = subprocess.run([str(plugin)], input=json.dumps(config), capture_output=True,
                         text=True, env=env, timeout=60, check=False)
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
    namespaces = ["ml-cni-ours", "ml-cni-ref"]
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


def test_version_and_errors(server: str, token: str) -> None:
    ours = {"cniVersion": "1.0.0", "name": "cninet", "type": "meshlet", "server": server,
            "token": token}
    code, version = invoke(PLUGIN, "VERSION", {"cniVersion": "1.0.0"}, None)
    _, reference = invoke(REFERENCE / "bridge", "VERSION", {"cniVersion": "1.0.0"}, None)
    assert code == 0 and sorted(version) == sorted(reference) == ["cniVersion",
                                                                  "supportedVersions"]
    assert "1.0.0" in version["supportedVersions"]
    cases = [
        ({**ours, "cniVersion": "9.9.9"}, "ml-cni-ours", 1),
        ({**ours, "name": "nowhere"}, "ml-cni-ours", 7),
        (ours, None, 4),                 # ADD without CNI_NETNS
    ]
    for config, ns, expected in cases:
        code, error = invoke(PLUGIN, "ADD", config, ns)
        assert code != 0 and error["code"] == expected, error
        assert sorted(error) == ["cniVersion", "code", "details", "msg"]

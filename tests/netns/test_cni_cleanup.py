"""Who removes what `meshlet-cni` made (needs root): the agent, whether or not it made
it. A runtime's container (here: the plugin run as a runtime runs it, into a namespace
of the test's) keeps its bridge while a meshlet container on the same network comes and
goes; `meshlet network rm` removes the bridge left once the runtime's DEL came; `down`
removes the bridge and the veth of a container whose DEL never came (its runtime was
killed); and a namespace that vanished without a DEL leaves only its lease, which
`network rm` names. Tests/netns/test_podman_cni.py does the same with real podman."""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from meshlet.net import bridge, netns
from tests.e2e.helpers import meshlet, up_token, wait_for
from tests.images import BUSYBOX
from tests.netns.helpers import clean_daemon
from tests.netns.test_cni import PLUGIN, invoke

pytestmark = pytest.mark.skipif(os.geteuid() != 0,
                                reason="needs root: creates network namespaces and links")
RUNTIME_NS = ["mlt-cni-a", "mlt-cni-b"]  # not meshlet's ``ml-``: these are the runtime's


@pytest.fixture
def home(tmp_path: Path) -> Iterator[Path]:
    try:
        with clean_daemon(tmp_path):
            for ns in RUNTIME_NS:
                netns.create(ns)
            yield tmp_path
    finally:
        for ns in RUNTIME_NS:
            netns.remove(ns)


def conf(home: Path) -> dict[str, Any]:
    api = json.loads((home / "up.json").read_text())["api"]
    return {"cniVersion": "1.0.0", "name": "cninet", "type": "meshlet", "server": api,
            "token": up_token(home)}


def addresses(home: Path) -> dict[str, str]:
    net = json.loads(meshlet("-o", "json", "network", "inspect", "cninet",
                             home=home).stdout)
    return dict(net["addresses"])


def reaches(ns: str, address: str) -> bool:
    return subprocess.run(["ip", "netns", "exec", ns, BUSYBOX, "ping", "-c", "1", "-W",
                           "2", address], capture_output=True, timeout=10,
                          check=False).returncode == 0


def test_network_rm_removes_the_bridge_meshlet_cni_made(home: Path) -> None:
    meshlet("network", "create", "cninet", "--subnet", "10.232.0.0/24", home=home)
    code, result = invoke(PLUGIN, "ADD", conf(home), "mlt-cni-a")
    assert code == 0 and result["ips"][0]["address"] == "10.232.0.2/24", result
    # A meshlet container joins the runtime's container on the bridge, and leaves: the
    # bridge stays, since the runtime's container is still on it.
    meshlet("run", "-d", "--name", "x", "--network", "cninet", "--", "sleep", "600",
            home=home)
    wait_for(lambda: meshlet("exec", "x", "--", BUSYBOX, "ping", "-c", "1", "-W", "2",
                             "10.232.0.2", home=home, check=False).returncode == 0,
             20, "the meshlet container to reach the runtime's")
    meshlet("rm", "-f", "x", home=home)
    wait_for(lambda: "x" not in meshlet("ps", home=home).stdout, 20, "x to be removed")
    assert bridge.bridge_name("cninet") in bridge.ours()
    assert reaches("mlt-cni-a", "10.232.0.1")  # the gateway, on the bridge

    code, out = invoke(PLUGIN, "DEL", conf(home), "mlt-cni-a")
    assert code == 0, out
    assert bridge.ours() == [bridge.bridge_name("cninet")]  # DEL leaves the bridge
    meshlet("network", "rm", "cninet", home=home)
    wait_for(lambda: bridge.ours() == [], 20, "network rm to remove the bridge")


def test_down_removes_what_a_container_without_del_left(home: Path) -> None:
    meshlet("network", "create", "cninet", "--subnet", "10.232.0.0/24", home=home)
    for ns in RUNTIME_NS:
        code, result = invoke(PLUGIN, "ADD", conf(home), ns, container=ns)
        assert code == 0, result
    # One namespace goes without a DEL (its veth with it); its lease stays, and keeps
    # the network, as it says.
    netns.remove("mlt-cni-b")
    assert sorted(addresses(home)) == ["cni-mlt-cni-a-eth0", "cni-mlt-cni-b-eth0"]
    refused = meshlet("network", "rm", "cninet", home=home, check=False)
    assert refused.returncode != 0 and "in use by cni-mlt-cni-a-eth0" in refused.stderr
    assert len(bridge.ours()) == 2  # the bridge and mlt-cni-a's veth
    # `down` (the clean_daemon fixture) must leave no link of either behind.

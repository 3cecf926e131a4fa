"""The mesh inside namespaces (needs root): examples/shop/meshlet-netns.yaml, each replica in its
own namespace on a bridge network with its sidecar beside it. Services resolve to
virtual IPs bound inside each caller's namespace, so a plain client that connects to
``catalog:80`` reaches its sidecar and is balanced over every catalog replica."""

from __future__ import annotations

import ipaddress
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from meshlet.agent.host_networks import namespace_prefix
from meshlet.net import netns
from tests.e2e.helpers import REPO, downed, free_port, meshlet, meshlet_json, wait_for
from tests.netns.helpers import GET_SERVED_BY, clean_daemon, leftovers

pytestmark = pytest.mark.skipif(os.geteuid() != 0,
                                reason="needs root: creates network namespaces and links")

SHOP = REPO / "examples" / "shop"
SHOP_NETNS = SHOP / "meshlet-netns.yaml"
SRV = ("import dns.resolver; r = dns.resolver.Resolver(); "
       "srv = r.resolve('_catalog._tcp', 'SRV'); a = r.resolve('catalog', 'A'); "
       "print([x.port for x in srv][0], [x.address for x in a][0])")


@pytest.fixture
def home(tmp_path: Path) -> Iterator[Path]:
    with clean_daemon(tmp_path, str(SHOP_NETNS)):
        yield tmp_path


def inside(instance: str, *argv: str) -> str:
    namespace = namespace_prefix(os.uname().nodename) + f"svc.{instance}"
    done = subprocess.run(["ip", "netns", "exec", namespace, *argv], capture_output=True,
                          text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_services_in_namespaces_reach_each_other_by_virtual_ip(home: Path) -> None:
    def passing() -> bool:
        services = meshlet_json("services", home=home)
        return len(services) == 3 and all(s["passing"] == s["instances"] for s in services)
    wait_for(passing, 60, "every instance to pass its checks")

    network = meshlet_json("network", "inspect", "shop", home=home)
    subnet = ipaddress.ip_network(network["subnet"])
    catalog = meshlet_json("instances", "catalog", home=home)
    addresses = {i["address"] for i in catalog}
    assert len(addresses) == 3 and all(ipaddress.ip_address(a) in subnet for a in addresses)

    vips = {v["service"]: v for v in meshlet_json("vips", home=home)["vips"]}
    assert vips["catalog"]["ports"] == [80]
    assert ipaddress.ip_address(vips["catalog"]["vip"]) in ipaddress.ip_network(
        "10.96.0.0/16")

    # The embedded DNS: the service's name gives its VIP, SRV its port.
    port, vip = inside("frontend-0", sys.executable, "-c", SRV).split()
    assert (int(port), vip) == (80, vips["catalog"]["vip"])

    # Each replica by its instance name, at its address.
    resolve = "import socket, sys; print(socket.gethostbyname(sys.argv[1]))"
    by_name = {i["id"]: i["address"] for i in catalog}
    assert inside("frontend-0", sys.executable, "-c", resolve, "catalog-1").strip() == \
        by_name["catalog-1"]

    # A plain client in frontend's namespace connects to catalog:80 and is balanced.
    served = inside("frontend-0", sys.executable, "-c", GET_SERVED_BY, "http://catalog/items", "30")
    assert set(served.split()) == {"catalog-0", "catalog-1", "catalog-2"}

    # The frontend app itself finds catalog by name, through the same path (asked on
    # its own port, beside it: only its sidecar speaks plaintext to it).
    front = meshlet_json("instances", "frontend", home=home)[0]
    app = f"{front['address']}:{front['meta']['app_port']}"
    page = json.loads(inside("frontend-0", sys.executable, "-c",
                             "import urllib.request; print(urllib.request.urlopen("
                             f"'http://{app}/', timeout=5).read().decode())"))
    assert page["frontend"] == "frontend-0" and page["catalog"].startswith("catalog-")

    # From the host, the frontend is reached through the ingress gateway, which calls
    # its sidecar in the namespace in mutual TLS.
    import urllib.request
    rows = json.loads((home / "up.json").read_text())["workloads"]
    gateway = next(r["address"] for r in rows if r["ingress"] and r["service"] == "frontend")
    page = json.loads(urllib.request.urlopen(f"http://{gateway}/", timeout=5).read())
    assert page["frontend"] == "frontend-0" and page["catalog"].startswith("catalog-")

    # Nothing listens on the VIP where no sidecar put it: pricing has no upstreams.
    refused = subprocess.run(
        ["ip", "netns", "exec", namespace_prefix(os.uname().nodename) + "svc.pricing-0",
         sys.executable, "-c", GET_SERVED_BY, "http://catalog/items", "1"],
        capture_output=True, text=True, timeout=60, check=False)
    assert refused.returncode != 0


def test_the_start_after_a_crash_gives_back_what_mesh_workloads_held(tmp_path: Path) -> None:
    """kill -9 of `up` (with its data kept) leaves a mesh workload's namespace behind
    and its address held; the next start removes the one and releases the other."""
    assert leftovers() == []
    (tmp_path / "web.yaml").write_text("services:\n  web:\n    command: sleep 600\n"
                                       "    network: crashmesh\n")
    data = tmp_path / "data"
    with downed(tmp_path):
        meshlet("up", "--detach", "--data-dir", str(data), "--http",
                f"127.0.0.1:{free_port()}", str(tmp_path / "web.yaml"), home=tmp_path)
        held = meshlet_json("network", "inspect", "crashmesh", home=tmp_path)["addresses"]
        assert list(held) == [f"svc:{os.uname().nodename}:web-0"]
        state = json.loads((tmp_path / "up.json").read_text())
        os.kill(state["pid"], 9)
        wait_for(lambda: not Path(f"/proc/{state['pid']}").exists(), 10, "the kill")
        assert any(n.endswith("-svc.web-0") for n in netns.ours())  # left behind
        meshlet("up", "--detach", "--data-dir", str(data), "--http",
                f"127.0.0.1:{free_port()}", home=tmp_path)
        wait_for(lambda: leftovers() == [], 20, "the new start to clean up")
        wait_for(lambda: meshlet_json("network", "inspect", "crashmesh",
                                      home=tmp_path)["addresses"] == {}, 20,
                 "the crashed workload's address to be released")

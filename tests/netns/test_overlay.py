"""The overlay driver across hosts (needs root): three hosts, each a network namespace
with its own agent, joined by an underlay; workloads on different hosts reach each
other by name over VXLAN, and a host that leaves has its entries removed; mesh
services on an overlay call each other across hosts through their sidecars."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from meshlet.agent.host_networks import namespace_prefix
from meshlet.net import netns
from meshlet.net.vxlan import vxlan_name
from tests.conftest import wait_until
from tests.netns.helpers import GET_SERVED_BY
from tests.netns.hosts import Hosts, in_ns, sh

SHOP = Path(__file__).resolve().parents[2] / "examples" / "shop"
pytestmark = pytest.mark.skipif(os.geteuid() != 0,
                                reason="needs root: creates network namespaces and links")

FETCH = ("import sys, urllib.request; print(urllib.request.urlopen(sys.argv[1], "
         "timeout=5).read().decode())")


@pytest.fixture
def hosts() -> Iterator[Hosts]:
    assert netns.ours() == [], "the machine is not clean before the test"
    with Hosts(3, node_ttl="2s") as found:
        yield found
    assert netns.ours() == [], "agents left container namespaces behind"


def running(hosts: Hosts, count: int) -> list[dict[str, Any]] | None:
    rows = [r for r in json.loads(hosts.cli("-o", "json", "ps")) if r["status"] == "running"]
    return rows if len(rows) == count else None


def fdb(hosts: Hosts, host: str, network: str) -> set[tuple[str, str]]:
    """(MAC, remote host) pairs on the host's VXLAN device for ``network``."""
    out = sh(*in_ns(hosts.ns(host), "bridge", "-j", "fdb", "show", "dev",
                    vxlan_name(network)))
    return {(e["mac"], e["dst"]) for e in json.loads(out or "[]") if "dst" in e}


def test_workloads_on_three_hosts_reach_each_other_by_name(hosts: Hosts,
                                                           tmp_path: Path) -> None:
    hosts.cli("network", "create", "ov", "--driver", "overlay", "--subnet",
              "10.231.0.0/24")
    for name, host in (("web", "host1"), ("api", "host2"), ("client", "host3")):
        served = tmp_path / name  # each serves only its own name: a wrong host answers 404
        served.mkdir()
        command = (["python3", "-c", f"import http.server,os; os.chdir({str(served)!r}); "
                    f"open('who-{name}','w').write('{name}'); "
                    "http.server.test(HandlerClass=http.server.SimpleHTTPRequestHandler,"
                    " port=8000, bind='0.0.0.0')"])
        hosts.cli("run", "-d", "--name", name, "--network", "ov", "--node", host,
                  "--", *command)
    rows = wait_until(lambda: running(hosts, 3), 30, "three containers running") or []
    addresses = {r["name"]: r["addresses"]["ov"] for r in rows}
    assert sorted(addresses.values()) == ["10.231.0.2", "10.231.0.3", "10.231.0.4"]

    # Each host reaches the other two by name, across the tunnel.
    for client, targets in (("client", ("web", "api")), ("web", ("api", "client"))):
        for target in targets:
            body = hosts.cli("exec", client, "--", "python3", "-c", FETCH,
                             f"http://{target}:8000/who-{target}")
            assert body.strip() == target

    # Host 1's tunnel holds exactly the other hosts' workloads, each behind its host.
    assert fdb(hosts, "host1", "ov") == {
        ("02:42:0a:e7:00:03", hosts.address("host2")),
        ("02:42:0a:e7:00:04", hosts.address("host3"))}

    # A host that leaves has its entries removed from the others.
    hosts.stop_agent("host3")
    assert "host3" not in hosts.nodes()
    wait_until(lambda: fdb(hosts, "host1", "ov") == {
        ("02:42:0a:e7:00:03", hosts.address("host2"))}, 20,
        "host3's entries to leave host1's tunnel")
    # ...and what it ran is gone from its namespace, links and all.
    links = sh(*in_ns(hosts.ns("host3"), "ip", "-o", "link"))
    assert "mlb" not in links and "mlx" not in links and "mlv" not in links

    # A host that crashes sends no more heartbeats: after the TTL its node is
    # deregistered, and the others drop its entries too.
    hosts.stop_agent("host2", kill=True)
    wait_until(lambda: "host2" not in hosts.nodes(), 20, "host2's node to be reaped")
    wait_until(lambda: fdb(hosts, "host1", "ov") == set(), 20,
               "host2's entries to leave host1's tunnel")
    # Its agent's next start cleans up after the crash (and runs api again).
    hosts.start_agent("host2")


CATALOG = f"""
services:
  pricing:
    command: [python3, {SHOP / 'pricing.py'}]
    network: ov
  catalog:
    command: [python3, {SHOP / 'catalog.py'}]
    replicas: 2
    upstreams: [pricing]
    network: ov
    check: {{http: /health, interval: 300ms}}
"""
FRONTEND = f"""
services:
  frontend:
    command: [python3, {SHOP / 'frontend.py'}]
    upstreams: [catalog]
    network: ov
"""

def test_mesh_services_on_an_overlay_call_across_hosts(hosts: Hosts, tmp_path: Path) -> None:
    hosts.cli("network", "create", "ov", "--driver", "overlay", "--subnet",
              "10.232.0.0/24")
    (tmp_path / "catalog.yaml").write_text(CATALOG)
    (tmp_path / "frontend.yaml").write_text(FRONTEND)
    hosts.stop_agent("host1")
    hosts.start_agent("host1", tmp_path / "catalog.yaml")
    wait_until(lambda: passing(hosts, "catalog") == 2, 60, "both catalogs to pass")
    hosts.stop_agent("host2")
    hosts.start_agent("host2", tmp_path / "frontend.yaml")

    # frontend's namespace on host2 calls catalog:80; both replicas on host1 answer.
    namespace = namespace_prefix("host2") + "svc.frontend-0"
    def served() -> set[str] | None:
        done = subprocess.run(["ip", "netns", "exec", namespace, sys.executable, "-c",
                               GET_SERVED_BY, "http://catalog/items", "20"],
                              capture_output=True, text=True, timeout=60, check=False)
        return set(done.stdout.split()) if done.returncode == 0 else None
    assert wait_until(served, 30, "frontend to reach catalog") == {"catalog-0", "catalog-1"}
    catalogs = json.loads(hosts.cli("-o", "json", "instances", "catalog"))
    assert {i["node"] for i in catalogs} == {"host1"}
    assert all(i["address"].startswith("10.232.0.") for i in catalogs)


def passing(hosts: Hosts, service: str) -> int:
    """Passing instances of ``service`` (none while it has not registered yet)."""
    try:
        rows = json.loads(hosts.cli("-o", "json", "instances", service))
    except AssertionError as exc:
        assert "is not known" in str(exc), exc
        return 0
    return sum(r["status"] == "passing" for r in rows)

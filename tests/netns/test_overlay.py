"""The overlay driver across hosts (needs root): three hosts, each a network namespace
with its own agent, joined by an underlay; workloads on different hosts reach each
other by name over VXLAN, and a host that leaves has its entries removed."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from typing import Any

import pytest

from meshlet.net import netns
from meshlet.net.vxlan import vxlan_name
from tests.conftest import wait_until
from tests.netns.hosts import Hosts, in_ns, sh

pytestmark = pytest.mark.skipif(os.geteuid() != 0,
                                reason="needs root: creates network namespaces and links")

FETCH = ("import sys, urllib.request; print(urllib.request.urlopen(sys.argv[1], "
         "timeout=5).read().decode())")


@pytest.fixture
def hosts() -> Iterator[Hosts]:
    assert netns.ours() == [], "the machine is not clean before the test"
    with Hosts(3) as found:
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


def test_workloads_on_three_hosts_reach_each_other_by_name(hosts: Hosts) -> None:
    hosts.cli("network", "create", "ov", "--driver", "overlay", "--subnet",
              "10.231.0.0/24")
    for name, host in (("web", "host1"), ("api", "host2"), ("client", "host3")):
        command = (["python3", "-c", f"import http.server,os; os.chdir('/tmp'); "
                    f"open('/tmp/who-{name}','w').write('{name}'); "
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

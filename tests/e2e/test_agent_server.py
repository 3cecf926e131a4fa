"""A separate server and agent: the mesh keeps serving while the server is down, and the
agent reconnects by itself when it returns."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest

from tests.conftest import agent_rule_args, management_token
from tests.e2e.helpers import (
    SHOP,
    Traffic,
    alive,
    descendants,
    env_for,
    free_port,
    meshlet,
    meshlet_json,
    wait_for,
)

pytestmark = pytest.mark.e2e


def connectable(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
        return True
    except OSError:
        return False


def start_server(tmp_path: Path, port: int) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "meshlet", "server", "--data-dir", str(tmp_path / "server"),
         "--http", f"127.0.0.1:{port}"], env=env_for(tmp_path),
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def test_server_outage_and_reconnect(tmp_path: Path) -> None:
    port = free_port()
    addr = f"http://127.0.0.1:{port}"
    server = start_server(tmp_path, port)
    management_token(tmp_path / "server")
    # The agent runs with a token of its own, as an operator would give it one.
    meshlet("--addr", addr, "acl", "policy", "create", "agent", *agent_rule_args(),
            home=tmp_path)
    secret = meshlet_json("--addr", addr, "acl", "token", "create", "--policy", "agent",
                          "--node-identity", "shop-node", home=tmp_path)["secret"]
    # The shop, with the frontend published on a known port of the agent's gateway.
    shop = tmp_path / "shop"
    shutil.copytree(SHOP.parent, shop)
    gateway, metrics_port = free_port(), free_port()
    (shop / SHOP.name).write_text(SHOP.read_text().replace("ingress: true",
                                                           f"ingress: {gateway}"))
    agent = subprocess.Popen(
        [sys.executable, "-m", "meshlet", "agent", "--server", addr, "--file",
         str(shop / SHOP.name),
         "--node", "shop-node", "--data-dir", str(tmp_path / "agent"),
         "--metrics-addr", f"127.0.0.1:{metrics_port}"],
        env={**env_for(tmp_path), "MESHLET_TOKEN": secret},
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        def passing() -> bool:
            out = meshlet("--addr", addr, "-o", "json", "services", home=tmp_path,
                          check=False)
            if out.returncode:
                return False
            import json
            services = json.loads(out.stdout)
            return len(services) == 3 and all(s["passing"] == s["instances"]
                                               for s in services)
        wait_for(passing, 60, "the shop to be healthy")
        wait_for(lambda: connectable(gateway), 30, "the ingress gateway to listen")
        victim = meshlet_json("--addr", addr, "instances", "catalog", home=tmp_path)[0]

        server.kill()
        server.wait(10)
        with Traffic(f"127.0.0.1:{gateway}") as traffic:
            wait_for(lambda: traffic.ok >= 200, 30, "traffic while the server is down")
        assert traffic.failed == []
        assert len(traffic.catalogs) == 3  # still balanced on the last known endpoints

        server = start_server(tmp_path, port)
        wait_for(passing, 30, "the server to come back with the catalog")
        os.kill(victim["pid"], signal.SIGKILL)

        def reported_restart() -> bool:
            catalog = meshlet_json("--addr", addr, "instances", "catalog", home=tmp_path)
            inst = next(i for i in catalog if i["id"] == victim["id"])
            return inst["restarts"] == 1 and inst["status"] == "passing"
        wait_for(reported_restart, 40, "the agent to report the restart to the new server")
        # The agent counted the restart on its metrics listener, whose address its node
        # registered.
        nodes = meshlet_json("--addr", addr, "nodes", home=tmp_path)
        assert [n["metrics"] for n in nodes] == [f"127.0.0.1:{metrics_port}"]
        scrape = urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics",
                                        timeout=5).read().decode()
        assert 'meshlet_agent_workload_restarts_total{service="catalog"} 1.0' in scrape
    finally:
        children = descendants(agent.pid)
        agent.send_signal(signal.SIGTERM)
        agent.wait(60)
        server.terminate()
        server.wait(10)
    assert agent.returncode == 0
    assert alive(children) == set()

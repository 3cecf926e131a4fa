"""Cluster membership with real `meshlet server` processes: founding with
--bootstrap-expect, growing 3 -> 5 with --join (the newcomers catch up by snapshot),
shrinking back to 3 with `raft remove-peer`, and replacing a server whose disk was
wiped."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.helpers import (
    env_for,
    free_ports,
    meshlet,
    meshlet_json,
    stop_processes,
    token_header,
    wait_for,
)

pytestmark = pytest.mark.e2e
IDS = ["s1", "s2", "s3", "s4", "s5"]
FOUNDERS = IDS[:3]


class Servers:
    def __init__(self, root: Path) -> None:
        self.root = root
        ports = free_ports(2 * len(IDS))
        self.raft = dict(zip(IDS, ports[:len(IDS)], strict=True))
        self.http = dict(zip(IDS, ports[len(IDS):], strict=True))
        self.procs: dict[str, subprocess.Popen[bytes]] = {}

    def url(self, node: str) -> str:
        return f"http://127.0.0.1:{self.http[node]}"

    def start(self, node: str, *how: str) -> None:
        with open(self.root / f"{node}.log", "ab") as log:  # kept for a failing run
            self.procs[node] = subprocess.Popen(
                [sys.executable, "-m", "meshlet", "--verbose", "server", "--id", node,
                 "--data-dir", str(self.root / node), "--http",
                 f"127.0.0.1:{self.http[node]}", "--raft", f"127.0.0.1:{self.raft[node]}",
                 "--snapshot-every", "40", "--snapshot-interval", "0s", *how],
                env=env_for(self.root), stdout=log, stderr=log)

    def found(self, node: str) -> None:
        self.start(node, "--bootstrap-expect", "3",
                   *[f"--join={self.url(p)}" for p in FOUNDERS if p != node])

    def get(self, node: str, path: str) -> Any:
        try:
            req = urllib.request.Request(self.url(node) + path,
                                         headers=token_header(self.root))
            with urllib.request.urlopen(req, timeout=5) as resp:
                return json.loads(resp.read())
        except (OSError, ValueError):
            return None

    def members(self, node: str) -> list[str] | None:
        status = self.get(node, "/v1/status")
        return sorted(m["id"] for m in status["members"]) if status else None

    def put(self, node: str, key: str, value: str) -> None:
        req = urllib.request.Request(f"{self.url(node)}/v1/kv/{key}", data=value.encode(),
                                     method="PUT", headers=token_header(self.root))
        with urllib.request.urlopen(req, timeout=10) as resp:
            assert resp.status == 200

    def has(self, node: str, key: str) -> bool:
        return self.get(node, f"/v1/kv/{key}?stale") is not None

    def cli(self, node: str, *args: str, check: bool = True
            ) -> subprocess.CompletedProcess[str]:
        return meshlet("--addr", self.url(node), *args, home=self.root, check=check)


@pytest.fixture
def servers(tmp_path: Path) -> Iterator[Servers]:
    s = Servers(tmp_path)
    try:
        yield s
    finally:
        stop_processes(s.procs)


def agreed(servers: Servers, nodes: list[str], expected: list[str]) -> bool:
    return all(servers.members(n) == expected for n in nodes)


def test_found_grow_shrink_and_replace_a_wiped_server(servers: Servers) -> None:
    for node in FOUNDERS:
        servers.found(node)
    wait_for(lambda: agreed(servers, FOUNDERS, FOUNDERS), 30,
             "the three founders to agree on one cluster")
    # One management token, and only the server whose proposal committed has its secret.
    assert [t["management"] for t in servers.get("s2", "/v1/acl/tokens")] == [True]
    assert len(list(servers.root.glob("*/management.token"))) == 1
    wait_for(lambda: not list(servers.root.glob("*/management.token.pending")), 30,
             "the others to drop their own proposals' secrets")
    for i in range(100):  # enough for snapshots (every 40 entries) and compaction
        servers.put(FOUNDERS[i % 3], f"k{i}", f"v{i}")

    # Grow to five: each newcomer asks a member (a follower forwards to the leader).
    servers.start("s4", f"--join={servers.url('s1')}")
    wait_for(lambda: servers.has("s4", "k99"), 30, "s4 to catch up")
    servers.start("s5", f"--join={servers.url('s4')}")
    everyone = IDS
    wait_for(lambda: agreed(servers, everyone, everyone), 30, "five members")
    wait_for(lambda: servers.has("s5", "k99"), 30, "s5 to catch up")
    status = servers.get("s5", "/v1/status")
    assert status["raft"]["snapshot_index"] > 0  # it was brought up by a snapshot
    assert status["raft"]["snapshots_installed"] >= 1
    with urllib.request.urlopen(servers.url("s1") + "/metrics", timeout=5) as resp:
        metrics = resp.read().decode()
    assert "meshlet_raft_elections_total" in metrics
    assert "meshlet_raft_snapshot_bytes" in metrics
    taken = [line for line in metrics.splitlines()
             if line.startswith("meshlet_raft_snapshot_duration_seconds_count")]
    assert taken and float(taken[0].split()[-1]) >= 2  # 100 writes, every 40
    table = servers.cli("s1", "members").stdout
    assert "LAST CONTACT" in table and table.count("\n") == 6
    servers.put("s5", "five", "yes")
    wait_for(lambda: all(servers.has(n, "five") for n in everyone), 30,
             "a write to reach all five")

    # Shrink back to three with the CLI, through any member.
    for gone in ("s4", "s5"):
        out = servers.cli("s1", "raft", "remove-peer", gone)
        assert f"removed {gone}" in out.stdout
    wait_for(lambda: agreed(servers, FOUNDERS, FOUNDERS), 30, "three members again")
    stop_processes({n: servers.procs[n] for n in ("s4", "s5")})
    servers.put("s1", "three", "yes")
    wait_for(lambda: all(servers.has(n, "three") for n in FOUNDERS), 30,
             "writes with the two gone")
    bad = servers.cli("s1", "raft", "remove-peer", "s9", check=False)
    assert bad.returncode == 1 and "'s9' is not a member" in bad.stderr
    bad = servers.cli("s1", "raft", "add-peer", "s6", "--raft", "nowhere", "--http", "x",
                      check=False)
    assert bad.returncode == 1 and "not HOST:PORT" in bad.stderr
    assert "Traceback" not in bad.stderr

    # Replace a server whose disk is lost: remove it, wipe it, start it again; with an
    # empty directory it finds the established cluster and joins it.
    victim = next(n for n in FOUNDERS
                  if not (servers.get(n, "/v1/status") or {}).get("leader"))
    rest = [n for n in FOUNDERS if n != victim]
    servers.cli(rest[0], "raft", "remove-peer", victim)
    wait_for(lambda: agreed(servers, rest, rest), 30, "the victim's removal")
    os.kill(servers.procs[victim].pid, signal.SIGKILL)
    servers.procs[victim].wait(10)
    shutil.rmtree(servers.root / victim)
    servers.put(rest[0], "while-away", "yes")
    servers.found(victim)
    wait_for(lambda: agreed(servers, FOUNDERS, FOUNDERS), 30, "the wiped server back")
    wait_for(lambda: all(servers.has(victim, k) for k in ("k0", "k99", "three",
                                                           "while-away")),
             30, "the wiped server to hold everything again")
    members = meshlet_json("--addr", servers.url(victim), "members", home=servers.root)
    assert sorted(m["id"] for m in members) == FOUNDERS

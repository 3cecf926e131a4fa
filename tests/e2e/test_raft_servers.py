"""Three `meshlet server` processes replicating with Raft: writes through any server,
reads from every server, kill -9 of the leader, and a restart that catches up."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

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


class Cluster:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.ids = ["s1", "s2", "s3"]
        ports = free_ports(6)  # all distinct
        self.raft = dict(zip(self.ids, ports[:3], strict=True))
        self.http = dict(zip(self.ids, ports[3:], strict=True))
        self.procs: dict[str, subprocess.Popen[bytes]] = {}

    def addr(self, node: str) -> str:
        return f"http://127.0.0.1:{self.http[node]}"

    def start(self, node: str) -> None:
        peers = [f"--peer={p}=127.0.0.1:{self.raft[p]},127.0.0.1:{self.http[p]}"
                 for p in self.ids if p != node]
        self.procs[node] = subprocess.Popen(
            [sys.executable, "-m", "meshlet", "server", "--id", node,
             "--data-dir", str(self.root / node), "--http", f"127.0.0.1:{self.http[node]}",
             "--raft", f"127.0.0.1:{self.raft[node]}", *peers],
            env=env_for(self.root), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def status(self, node: str) -> dict | None:  # type: ignore[type-arg]
        out = meshlet("--addr", self.addr(node), "-o", "json", "status", home=self.root,
                      check=False)
        if out.returncode:
            return None
        import json
        return json.loads(out.stdout)  # type: ignore[no-any-return]

    def leader(self, among: list[str]) -> str | None:
        for node in among:
            s = self.status(node)
            if s and s["leader"]:
                return node
        return None


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[Cluster]:
    c = Cluster(tmp_path)
    for node in c.ids:
        c.start(node)
    try:
        yield c
    finally:
        stop_processes(c.procs)


def test_three_servers_replicate_and_survive_the_leaders_death(cluster: Cluster) -> None:
    leader = wait_for(lambda: cluster.leader(cluster.ids), 30, "a leader")
    follower = next(n for n in cluster.ids if n != leader)
    # Writes through a follower are forwarded to the leader.
    for i in range(10):
        meshlet("--addr", cluster.addr(follower), "kv", "put", f"k{i}", f"v{i}",
                home=cluster.root)

    def everywhere(key: str, value: str, nodes: list[str]) -> bool:
        for node in nodes:
            out = meshlet("--addr", cluster.addr(node), "kv", "get", key, home=cluster.root,
                          check=False)
            if out.stdout != value + "\n":
                return False
        return True
    wait_for(lambda: everywhere("k9", "v9", cluster.ids), 20, "replication to every server")

    # A token made through one follower works at once through another: a server that
    # does not know it yet hands the request to the leader, token and all.
    others = [n for n in cluster.ids if n != leader]
    meshlet("--addr", cluster.addr(others[0]), "acl", "policy", "create", "k",
            "--rule", "kv:k:write", home=cluster.root)
    made = meshlet_json("--addr", cluster.addr(others[0]), "acl", "token", "create",
                        "--policy", "k", home=cluster.root)
    as_k = meshlet("--addr", cluster.addr(others[1]), "--token", made["secret"], "kv", "put",
                   "k-new", "fresh", home=cluster.root, check=False)
    assert as_k.returncode == 0, as_k.stderr
    refused = meshlet("--addr", cluster.addr(others[1]), "--token", made["secret"], "kv",
                      "put", "other", "x", home=cluster.root, check=False)
    assert "may not write kv 'other'" in refused.stderr

    # Reads: consistent and default go to the leader (forwarded), stale stays local.
    for mode in ("consistent", "default", "stale"):
        out = meshlet("--addr", cluster.addr(follower), "kv", "get", "k3",
                      "--consistency", mode, home=cluster.root)
        assert out.stdout == "v3\n"
    import urllib.request
    req = urllib.request.Request(f"{cluster.addr(follower)}/v1/kv/k3?stale",
                                 headers=token_header(cluster.root))
    with urllib.request.urlopen(req, timeout=5) as r:
        assert r.headers["X-Meshlet-Known-Leader"] == "true"
        assert int(r.headers["X-Meshlet-Last-Contact"]) >= 0

    members = meshlet_json("--addr", cluster.addr(leader), "members", home=cluster.root)
    assert {m["id"] for m in members} == set(cluster.ids)
    assert [m["id"] for m in members if m["role"] == "leader"] == [leader]
    raft = meshlet_json("--addr", cluster.addr(leader), "raft", "status", home=cluster.root)
    assert raft["role"] == "leader" and raft["commit"] >= 11
    with urllib.request.urlopen(f"{cluster.addr(leader)}/metrics", timeout=5) as r:
        metrics = r.read().decode()
    assert 'meshlet_raft_role{role="leader"} 1.0' in metrics
    assert f"meshlet_raft_term {float(raft['term'])}" in metrics
    assert "meshlet_raft_leader_changes_total" in metrics

    # Hand leadership to a chosen follower (asked through another follower: forwarded).
    target = next(n for n in cluster.ids if n not in (leader, follower))
    out = meshlet("--addr", cluster.addr(follower), "raft", "transfer-leader", target,
                  home=cluster.root)
    assert out.stdout.strip() == f"leadership handed to {target}"
    wait_for(lambda: cluster.leader([target]) == target, 20, "the new leader to take over")
    bad = meshlet("--addr", cluster.addr(target), "raft", "transfer-leader", "nobody",
                  home=cluster.root, check=False)
    assert bad.returncode == 1 and "'nobody' is not another server" in bad.stderr
    leader = target

    os.kill(cluster.procs[leader].pid, signal.SIGKILL)
    cluster.procs[leader].wait(10)
    rest = [n for n in cluster.ids if n != leader]
    new_leader = wait_for(lambda: cluster.leader(rest), 30, "a new leader")
    meshlet("--addr", cluster.addr(new_leader), "kv", "put", "after", "failover",
            home=cluster.root)
    wait_for(lambda: everywhere("after", "failover", rest), 20, "the write after failover")

    cluster.start(leader)  # back from disk: catches up on what it missed
    wait_for(lambda: everywhere("after", "failover", cluster.ids), 30, "catch-up")
    assert all(everywhere(f"k{i}", f"v{i}", [leader]) for i in range(10))

"""Servers bound beyond loopback, for real: in a network namespace the test makes,
with addresses on a veth pair there (no traffic leaves it). Three servers found
a cluster with --bootstrap-expect through each other's HTTPS API and replicate over
mutual TLS; the CLI is answered over HTTPS when it checks the cluster's ca.pem, and
refused without it; plain HTTP gets no answer. Needs root (network namespaces)."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.helpers import env_for, free_ports, stop_processes, wait_for

pytestmark = pytest.mark.skipif(os.geteuid() != 0,
                                reason="needs root: makes a network namespace")

NS = f"mltest-https-{os.getpid()}"
ADDRESSES = {"s1": "10.251.0.1", "s2": "10.251.0.2", "s3": "10.251.0.3"}


def ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, timeout=10)


def in_ns(*argv: str, home: Path, check: bool = False) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(["ip", "netns", "exec", NS, *argv], capture_output=True,
                          text=True, env=env_for(home), timeout=60, check=False)
    assert not check or proc.returncode == 0, proc.stderr
    return proc


@pytest.fixture
def namespace() -> Iterator[str]:
    ip("netns", "add", NS)
    try:
        ip("-n", NS, "link", "set", "lo", "up")
        ip("-n", NS, "link", "add", "d0", "type", "veth", "peer", "name", "d1")
        for address in ADDRESSES.values():
            ip("-n", NS, "addr", "add", f"{address}/24", "dev", "d0")
        ip("-n", NS, "link", "set", "d0", "up")
        ip("-n", NS, "link", "set", "d1", "up")
        yield NS
    finally:
        ip("netns", "del", NS)


def test_a_cluster_beyond_loopback_speaks_https_and_mutual_tls(namespace: str,
                                                             tmp_path: Path) -> None:
    ports = free_ports(2)  # the same ports on each address: they are the namespace's
    http = {i: f"{a}:{ports[0]}" for i, a in ADDRESSES.items()}
    procs = {}
    try:
        for node, address in ADDRESSES.items():
            joins = [f"--join=http://{http[p]}" for p in ADDRESSES if p != node]
            log = (tmp_path / f"{node}.log").open("ab")
            procs[node] = subprocess.Popen(
                ["ip", "netns", "exec", NS, sys.executable, "-m", "meshlet", "server",
                 "--id", node, "--data-dir", str(tmp_path / node), "--http", http[node],
                 "--raft", f"{address}:{ports[1]}", "--bootstrap-expect", "3", *joins],
                env=env_for(tmp_path), stdout=log, stderr=log)
        cas = [tmp_path / node / "ca.pem" for node in ADDRESSES]
        wait_for(lambda: all(ca.exists() for ca in cas), 30, "each server's ca.pem")
        assert len({ca.read_bytes() for ca in cas}) == 1  # one root, derived by each
        ca_file = cas[0]

        def status() -> bool:
            out = in_ns(sys.executable, "-m", "meshlet", "--addr", f"http://{http['s2']}",
                        "--ca-file", str(ca_file), "-o", "json", "members", home=tmp_path)
            return out.returncode == 0 and out.stdout.count('"id"') == 3
        wait_for(status, 60, "three servers founded over HTTPS")
        cli = [sys.executable, "-m", "meshlet", "--ca-file", str(ca_file)]
        in_ns(*cli, "--addr", http["s3"], "kv", "put", "app/colour", "blue", home=tmp_path,
              check=True)
        got = in_ns(*cli, "--addr", http["s1"], "kv", "get", "app/colour",
                    "--consistency", "consistent", home=tmp_path, check=True)
        assert got.stdout.strip() == "blue"
        refused = in_ns(sys.executable, "-m", "meshlet", "--addr", http["s1"], "status",
                        home=tmp_path)
        assert refused.returncode == 1 and "certificate" in refused.stderr
        assert "Traceback" not in refused.stderr and refused.stderr.count("\n") == 1
        plain = in_ns(sys.executable, "-c", "import urllib.request as u; "
                      f"u.urlopen('http://{http['s1']}/v1/status', timeout=5)", home=tmp_path)
        assert plain.returncode != 0
        for node in ADDRESSES:
            assert oct((tmp_path / node / "tls" / "server.key").stat().st_mode & 0o777) \
                == "0o600"
    finally:
        stop_processes(procs)

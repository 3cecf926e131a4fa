"""A 3-server meshlet Raft cluster against a 3-member etcd cluster, same machine, same
run, same clients and value size. Measures and reports ratios; never fails.

Writes/s and commit latency at 16 and 64 concurrent clients (to the leader), the
servers' CPU time per write at 64 clients (the three servers together; steadier than
throughput on a loaded machine),
linearizable reads (leader) and stale reads (a follower) at 64 clients, the time from
kill -9 of the leader to the next acknowledged write, and the time from starting a
fresh cluster to its first acknowledged write. Clients are aiohttp, talking to
meshlet's HTTP API and to etcd's v3 JSON gateway.

Usage: python bench/raft_bench.py [--seconds 3]   (needs Debian's etcd-server)
BENCH_EXTRA="--snapshot-every 1000" adds flags to each meshlet server's command line.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import compileall
import contextlib
import os
import secrets
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp

VALUE = b"v" * 64
EXTRA = os.environ.get("BENCH_EXTRA", "").split()
JOIN_TOKEN = secrets.token_urlsafe(32)  # the benchmark cluster's shared secret


def free_ports(n: int) -> list[int]:
    """``n`` distinct free ports, all held while choosing so none repeats."""
    held = [socket.socket() for _ in range(n)]
    for s in held:
        s.bind(("127.0.0.1", 0))
    ports = [int(s.getsockname()[1]) for s in held]
    for s in held:
        s.close()
    return ports


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


class System:
    name = ""
    procs: dict[str, subprocess.Popen[bytes]]
    urls: dict[str, str]

    async def put(self, s: aiohttp.ClientSession, url: str, key: str) -> bool: ...
    async def get(self, s: aiohttp.ClientSession, url: str, key: str, stale: bool
                  ) -> bool: ...
    async def leader(self, s: aiohttp.ClientSession) -> str | None: ...

    def cpu_seconds(self) -> float:
        """CPU time (user + system) the three servers have used so far."""
        total = 0
        for p in self.procs.values():
            with contextlib.suppress(OSError):
                fields = Path(f"/proc/{p.pid}/stat").read_text().rsplit(")", 1)[1].split()
                total += int(fields[11]) + int(fields[12])  # utime, stime
        return total / os.sysconf("SC_CLK_TCK")

    def kill(self, node: str) -> None:
        os.kill(self.procs[node].pid, signal.SIGKILL)
        self.procs[node].wait()

    def stop(self) -> None:
        for p in self.procs.values():
            if p.poll() is None:
                p.terminate()
                p.wait(10)


class Meshlet(System):
    name = "meshlet"

    def __init__(self, root: Path) -> None:
        ids = ["s1", "s2", "s3"]
        ports = free_ports(6)
        raft, http = dict(zip(ids, ports[:3], strict=True)), dict(zip(ids, ports[3:], strict=True))
        self.urls = {i: f"http://127.0.0.1:{http[i]}" for i in ids}
        self.procs = {}
        for i in ids:
            peers = [f"--peer={p}=127.0.0.1:{raft[p]},127.0.0.1:{http[p]}"
                     for p in ids if p != i]
            self.procs[i] = subprocess.Popen(
                [sys.executable, "-m", "meshlet", "server", "--id", i, "--data-dir",
                 str(root / i), "--http", f"127.0.0.1:{http[i]}",
                 "--raft", f"127.0.0.1:{raft[i]}", *peers, *EXTRA],
                env={**os.environ, "MESHLET_JOIN_TOKEN": JOIN_TOKEN},
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    async def put(self, s: aiohttp.ClientSession, url: str, key: str) -> bool:
        async with s.put(f"{url}/v1/kv/{key}", data=VALUE) as r:
            await r.read()
            return r.status == 200

    async def get(self, s: aiohttp.ClientSession, url: str, key: str, stale: bool) -> bool:
        mode = "stale" if stale else "consistent"
        async with s.get(f"{url}/v1/kv/{key}?consistency={mode}") as r:
            await r.read()
            return r.status == 200

    async def leader(self, s: aiohttp.ClientSession) -> str | None:
        for node, url in self.urls.items():
            if self.procs[node].poll() is not None:
                continue
            try:
                async with s.get(f"{url}/v1/status") as r:
                    if (await r.json())["leader"]:
                        return node
            except (aiohttp.ClientError, OSError, ValueError):
                continue
        return None


class Etcd(System):
    name = "etcd"

    def __init__(self, root: Path) -> None:
        ids = ["e1", "e2", "e3"]
        ports = free_ports(6)
        client, peer = (dict(zip(ids, ports[:3], strict=True)),
                        dict(zip(ids, ports[3:], strict=True)))
        self.urls = {i: f"http://127.0.0.1:{client[i]}" for i in ids}
        cluster = ",".join(f"{i}=http://127.0.0.1:{peer[i]}" for i in ids)
        self.procs = {}
        for i in ids:
            self.procs[i] = subprocess.Popen(
                ["etcd", "--name", i, "--data-dir", str(root / i),
                 "--listen-client-urls", self.urls[i], "--advertise-client-urls", self.urls[i],
                 "--listen-peer-urls", f"http://127.0.0.1:{peer[i]}",
                 "--initial-advertise-peer-urls", f"http://127.0.0.1:{peer[i]}",
                 "--initial-cluster", cluster, "--initial-cluster-state", "new",
                 "--heartbeat-interval", "100", "--election-timeout", "1000"],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    async def put(self, s: aiohttp.ClientSession, url: str, key: str) -> bool:
        async with s.post(f"{url}/v3/kv/put", json={"key": b64(key.encode()),
                                                     "value": b64(VALUE)}) as r:
            await r.read()
            return r.status == 200

    async def get(self, s: aiohttp.ClientSession, url: str, key: str, stale: bool) -> bool:
        async with s.post(f"{url}/v3/kv/range", json={"key": b64(key.encode()),
                                                       "serializable": stale}) as r:
            await r.read()
            return r.status == 200

    async def leader(self, s: aiohttp.ClientSession) -> str | None:
        for node, url in self.urls.items():
            if self.procs[node].poll() is not None:
                continue
            try:
                async with s.post(f"{url}/v3/maintenance/status", json={}) as r:
                    body = await r.json()
                    if body.get("leader") == body.get("header", {}).get("member_id"):
                        return node
            except (aiohttp.ClientError, OSError, ValueError):
                continue
        return None


async def until_leader(system: System, s: aiohttp.ClientSession, timeout: float = 30
                       ) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        leader = await system.leader(s)
        if leader:
            return leader
        await asyncio.sleep(0.05)
    raise RuntimeError(f"{system.name}: no leader")


async def load(op: Any, clients: int, seconds: float) -> tuple[float, float, float]:
    """(ops/s, p50 ms, p99 ms) of ``op`` run by ``clients`` concurrent loops."""
    latencies: list[float] = []
    deadline = time.monotonic() + seconds

    async def loop(n: int) -> None:
        i = 0
        while time.monotonic() < deadline:
            started = time.perf_counter()
            if await op(f"bench/{n}/{i % 100}"):
                latencies.append(time.perf_counter() - started)
            i += 1
    await asyncio.gather(*(loop(n) for n in range(clients)))
    if not latencies:
        return 0.0, 0.0, 0.0
    q = statistics.quantiles(latencies, n=100)
    return len(latencies) / seconds, q[49] * 1000, q[98] * 1000


async def measure(system: System, seconds: float, started: float) -> dict[str, Any]:
    results: dict[str, Any] = {}
    conn = aiohttp.TCPConnector(limit=256)
    async with aiohttp.ClientSession(connector=conn) as s:
        leader = await until_leader(system, s)
        url = system.urls[leader]
        deadline = time.monotonic() + 30
        while not await system.put(s, url, "first"):
            if time.monotonic() > deadline:
                raise RuntimeError("no first write")
        results["first write s"] = time.monotonic() - started
        for clients in (16, 64):
            cpu_before = system.cpu_seconds()
            rate, p50, p99 = await load(lambda k: system.put(s, url, k), clients, seconds)
            results[f"writes/s @{clients}"] = rate
            results[f"write p50 ms @{clients}"] = p50
            results[f"write p99 ms @{clients}"] = p99
            if clients == 64 and rate:
                results["servers' CPU µs per write @64"] = (
                    (system.cpu_seconds() - cpu_before) / (rate * seconds) * 1e6)
        follower = next(n for n in system.urls if n != leader)
        rate, _, _ = await load(lambda k: system.get(s, url, k, False), 64, seconds)
        results["linearizable reads/s @64"] = rate
        rate, _, _ = await load(lambda k: system.get(s, system.urls[follower], k, True),
                                64, seconds)
        results["stale reads/s @64 (follower)"] = rate
        system.kill(leader)
        killed = time.monotonic()
        rest = [u for n, u in system.urls.items() if n != leader]
        done = False
        while not done and time.monotonic() - killed < 30:
            for u in rest:
                try:
                    done = await asyncio.wait_for(system.put(s, u, "after"), 1.0)
                except (TimeoutError, aiohttp.ClientError, OSError):
                    done = False
                if done:
                    break
        results["failover s (kill -9 leader to next write)"] = time.monotonic() - killed
    return results


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=3.0)
    args = parser.parse_args()
    if not shutil.which("etcd"):
        print("bench: etcd is not installed (Debian package etcd-server)", file=sys.stderr)
        return 0
    # Byte-compile meshlet as pip does when it installs a package. Without this an
    # editable checkout under PYTHONDONTWRITEBYTECODE compiles every module in every
    # server process, which the first-write time would wrongly include.
    import meshlet
    compileall.compile_dir(Path(meshlet.__file__).parent, quiet=1)
    table: dict[str, dict[str, Any]] = {}
    for cls in (Meshlet, Etcd):
        root = Path(tempfile.mkdtemp(prefix=f"raft-bench-{cls.name}-"))
        started = time.monotonic()
        system = cls(root)
        try:
            table[cls.name] = asyncio.run(measure(system, args.seconds, started))
        finally:
            system.stop()
            shutil.rmtree(root, ignore_errors=True)
    print("| measure | meshlet | etcd | meshlet / etcd |")
    print("|---|---|---|---|")
    for key in table["meshlet"]:
        m, e = table["meshlet"][key], table["etcd"][key]
        print(f"| {key} | {m:,.2f} | {e:,.2f} | {m / e if e else float('nan'):.2f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())

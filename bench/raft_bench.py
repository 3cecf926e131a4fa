"""A 3-server meshlet Raft cluster against a 3-member etcd cluster, same machine, same
run, same clients and value size. Measures and reports ratios; never fails.

Writes/s and commit latency at 16 and 64 concurrent clients (to the leader), the
servers' CPU time per write at 64 clients (the three servers together; steadier than
throughput on a loaded machine),
linearizable reads (leader) and stale reads (a follower) at 64 clients, the time from
kill -9 of the leader to the next acknowledged write, and the time from starting a
fresh cluster to its first acknowledged write. Clients are aiohttp, talking to
meshlet's HTTP API and to etcd's v3 JSON gateway.

Then wrk (two threads, 64 connections, 256-byte values, keep-alive) puts to each
leader, reporting its p50 and p99: wrk costs the servers' cores far less than the
aiohttp clients, so the servers' own tail shows there.

Usage: python bench/raft_bench.py [--seconds 3] [--rounds 1]   (needs Debian's
etcd-server; the wrk phase needs wrk)
BENCH_EXTRA="--snapshot-every 1000" adds flags to each meshlet server's command line.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import compileall
import contextlib
import os
import re
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

sys.path.insert(0, str(Path(__file__).parent))
from proxy_bench import to_ms  # wrk's latencies

VALUE = b"v" * 64
WRK_VALUE = b"v" * 256  # the wrk phase's puts
WRK_CLIENTS = 64
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
    def wrk_script(self) -> str: ...

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
        self.root = root
        self.headers: dict[str, str] = {}
        for i in ids:
            peers = [f"--peer={p}=127.0.0.1:{raft[p]},127.0.0.1:{http[p]}"
                     for p in ids if p != i]
            self.procs[i] = subprocess.Popen(
                [sys.executable, "-m", "meshlet", "server", "--id", i, "--data-dir",
                 str(root / i), "--http", f"127.0.0.1:{http[i]}",
                 "--raft", f"127.0.0.1:{raft[i]}", *peers, *EXTRA],
                env={**os.environ, "MESHLET_JOIN_TOKEN": JOIN_TOKEN},
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def auth(self) -> dict[str, str]:
        """The management token (the founding leader writes it in its data directory)."""
        if not self.headers:
            for path in self.root.glob("*/management.token"):
                self.headers = {"X-Meshlet-Token": path.read_text().strip()}
        return self.headers

    async def put(self, s: aiohttp.ClientSession, url: str, key: str) -> bool:
        async with s.put(f"{url}/v1/kv/{key}", data=VALUE, headers=self.auth()) as r:
            await r.read()
            return r.status == 200

    async def get(self, s: aiohttp.ClientSession, url: str, key: str, stale: bool) -> bool:
        mode = "stale" if stale else "consistent"
        async with s.get(f"{url}/v1/kv/{key}?consistency={mode}",
                         headers=self.auth()) as r:
            await r.read()
            return r.status == 200

    def wrk_script(self) -> str:
        token = self.auth()["X-Meshlet-Token"]
        return (f'wrk.method = "PUT"\nwrk.body = string.rep("v", {len(WRK_VALUE)})\n'
                f'wrk.headers["X-Meshlet-Token"] = "{token}"\n' + WRK_KEYS +
                'return wrk.format(nil, "/v1/kv/bench/wrk/" .. key)\nend\n')

    async def leader(self, s: aiohttp.ClientSession) -> str | None:
        for node, url in self.urls.items():
            if self.procs[node].poll() is not None:
                continue
            try:
                async with s.get(f"{url}/v1/status", headers=self.auth()) as r:
                    if r.status == 200 and (await r.json())["leader"]:
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

    def wrk_script(self) -> str:
        value = b64(WRK_VALUE)
        return (WRK_KEYS + 'local body = \'{"key": "\' .. b64("bench/wrk/" .. key) .. '
                f'\'", "value": "{value}"}}\'\n'
                'return wrk.format("POST", "/v3/kv/put", '
                '{["Content-Type"] = "application/json"}, body)\nend\n' + LUA_B64)

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


# Each wrk thread writes 100 keys in turn, as the aiohttp clients do.
WRK_KEYS = ('counter = 0\nrequest = function()\ncounter = counter + 1\n'
            'local key = tostring(counter % 100)\n')
LUA_B64 = """
local chars = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/'
function b64(data)
  return ((data:gsub('.', function(x)
    local r, b = '', x:byte()
    for i = 8, 1, -1 do r = r .. (b % 2 ^ i - b % 2 ^ (i - 1) > 0 and '1' or '0') end
    return r
  end) .. '0000'):gsub('%d%d?%d?%d?%d?%d?', function(x)
    if #x < 6 then return '' end
    local c = 0
    for i = 1, 6 do c = c + (x:sub(i, i) == '1' and 2 ^ (6 - i) or 0) end
    return chars:sub(c + 1, c + 1)
  end) .. ({'', '==', '='})[#data % 3 + 1])
end
"""


def run_wrk(system: System, url: str, seconds: float) -> dict[str, float]:
    """wrk with WRK_CLIENTS connections putting 256-byte values to ``url``: the
    clients cost the servers' two cores far less than aiohttp's, so this is where the
    servers' own tail shows."""
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as script:
        script.write(system.wrk_script())
    try:
        cpu_before = system.cpu_seconds()
        out = subprocess.run(["wrk", "-t2", f"-c{WRK_CLIENTS}", f"-d{max(1, round(seconds))}s",
                              "--latency", "-s", script.name, url],
                             capture_output=True, text=True, check=True, timeout=seconds + 60
                             ).stdout
        cpu = system.cpu_seconds() - cpu_before
    finally:
        os.unlink(script.name)
    if "Requests/sec" not in out or "99%" not in out:
        raise RuntimeError(f"unexpected wrk output:\n{out}")
    found = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    total = int(re.search(r"(\d+) requests in", out).group(1))  # type: ignore[union-attr]
    rate = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    return {
        f"wrk writes/s @{WRK_CLIENTS}": rate,
        f"wrk write p50 ms @{WRK_CLIENTS}": to_ms(
            re.search(r"^\s+50%\s+(\S+)", out, re.M).group(1)),  # type: ignore[union-attr]
        f"wrk write p99 ms @{WRK_CLIENTS}": to_ms(
            re.search(r"^\s+99%\s+(\S+)", out, re.M).group(1)),  # type: ignore[union-attr]
        f"wrk servers' CPU µs per write @{WRK_CLIENTS}": cpu / total * 1e6 if total else 0.0,
        "wrk failed writes": float(found.group(1)) if found else 0.0,
    }


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
        if shutil.which("wrk"):
            results.update(await asyncio.to_thread(run_wrk, system, url, seconds))
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
    parser.add_argument("--rounds", type=int, default=1)
    args = parser.parse_args()
    if not shutil.which("etcd"):
        print("bench: etcd is not installed (Debian package etcd-server)", file=sys.stderr)
        return 0
    # Byte-compile meshlet as pip does when it installs a package. Without this an
    # editable checkout under PYTHONDONTWRITEBYTECODE compiles every module in every
    # server process, which the first-write time would wrongly include.
    import meshlet
    compileall.compile_dir(Path(meshlet.__file__).parent, quiet=1)
    rounds: dict[str, list[dict[str, Any]]] = {"meshlet": [], "etcd": []}
    for _ in range(args.rounds):  # the two alternate, round after round
        for cls in (Meshlet, Etcd):
            root = Path(tempfile.mkdtemp(prefix=f"raft-bench-{cls.name}-"))
            started = time.monotonic()
            system = cls(root)
            try:
                rounds[cls.name].append(asyncio.run(measure(system, args.seconds, started)))
            finally:
                system.stop()
                shutil.rmtree(root, ignore_errors=True)
    if args.rounds > 1:
        print(f"Medians of {args.rounds} alternating rounds (each round's ratio in brackets).")
    print("| measure | meshlet | etcd | meshlet / etcd |")
    print("|---|---|---|---|")
    for key in rounds["meshlet"][0]:
        ms = [r[key] for r in rounds["meshlet"]]
        es = [r[key] for r in rounds["etcd"]]
        m, e = statistics.median(ms), statistics.median(es)
        ratios = ", ".join(f"{a / b:.2f}" if b else "nan" for a, b in zip(ms, es, strict=True))
        each = f" ({ratios})" if args.rounds > 1 else ""
        print(f"| {key} | {m:,.2f} | {e:,.2f} | {m / e if e else float('nan'):.2f}{each} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())

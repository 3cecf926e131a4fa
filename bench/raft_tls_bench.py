"""Raft writes/s over mutual TLS against the same cluster in the clear, in one run.

Three Raft drivers, each in its own process with its log on disk (fsync), talk over
loopback TCP: in the clear (the baseline, which only benchmarks and tests use) or in
mutual TLS 1.3 with certificates from a cluster CA, as servers do. The leader's
process proposes 64-byte entries from C concurrent proposers for S seconds. Rounds
alternate clear, TLS, clear, TLS..., so drift in the machine's load falls on both;
the report gives each round, the medians and their ratio. Never fails.

Usage: python bench/raft_tls_bench.py [--seconds 3] [--rounds 3] [--clients 64]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from meshlet.raft.driver import RaftDriver
from meshlet.server.tls import ServerTls

TOKEN = "bench-join-token-0123456789abcdef"
VALUE = b"v" * 64


def free_ports(n: int) -> list[int]:
    held = [socket.socket() for _ in range(n)]
    for s in held:
        s.bind(("127.0.0.1", 0))
    ports = [int(s.getsockname()[1]) for s in held]
    for s in held:
        s.close()
    return ports


async def member(node_id: str, ports: dict[str, int], data: Path, tls: bool,
                 seconds: float, clients: int) -> None:
    """One server: run the driver; if it leads, measure and print the writes/s."""
    tls_config = None
    if tls:
        tls_config = ServerTls(data, TOKEN, node_id, ["127.0.0.1"]).raft()
    founders = {i: {"raft": f"127.0.0.1:{p}"} for i, p in ports.items()}
    driver = RaftDriver.on_disk(node_id, ("127.0.0.1", ports[node_id]), data / "raft",
                                lambda e: e.index, lambda d: None, lambda: b"",
                                founders, tls=tls_config)
    await driver.start()
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 30
    while not driver.is_leader and driver.node is not None and driver.node.leader is None \
            and loop.time() < deadline:
        await asyncio.sleep(0.02)
    if driver.is_leader:
        await driver.propose(VALUE)  # the first write of the term is committed
        done = 0
        end = time.perf_counter() + seconds

        async def proposer() -> None:
            nonlocal done
            while time.perf_counter() < end:
                await driver.propose(VALUE)
                done += 1
        started = time.perf_counter()
        await asyncio.gather(*(proposer() for _ in range(clients)))
        print(json.dumps({"writes_per_s": done / (time.perf_counter() - started)}),
              flush=True)
    await asyncio.sleep(seconds + 5 if not driver.is_leader else 0.5)
    await driver.stop()


def one_round(tls: bool, seconds: float, clients: int) -> float | None:
    ids = ["s1", "s2", "s3"]
    ports = dict(zip(ids, free_ports(3), strict=True))
    with tempfile.TemporaryDirectory(prefix="meshlet-tls-bench-") as tmp:
        procs = [subprocess.Popen(
            [sys.executable, __file__, "--member", i, "--ports", json.dumps(ports),
             "--data", str(Path(tmp) / i), "--seconds", str(seconds),
             "--clients", str(clients), *(["--tls"] if tls else [])],
            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True) for i in ids]
        rates = []
        for p in procs:
            out, _ = p.communicate(timeout=seconds + 60)
            rates += [json.loads(line)["writes_per_s"] for line in out.splitlines() if line]
    return rates[0] if rates else None


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--clients", type=int, default=64)
    parser.add_argument("--member")
    parser.add_argument("--ports")
    parser.add_argument("--data")
    parser.add_argument("--tls", action="store_true")
    args = parser.parse_args()
    if args.member:
        asyncio.run(member(args.member, json.loads(args.ports), Path(args.data), args.tls,
                           args.seconds, args.clients))
        return
    results: dict[str, list[float]] = {"clear": [], "mtls": []}
    for n in range(args.rounds):
        for mode in ("clear", "mtls"):
            rate = one_round(mode == "mtls", args.seconds, args.clients)
            print(f"round {n + 1} {mode:5}: "
                  + (f"{rate:8.0f} writes/s" if rate else "no leader"), flush=True)
            if rate:
                results[mode].append(rate)
    if results["clear"] and results["mtls"]:
        clear, mtls = statistics.median(results["clear"]), statistics.median(results["mtls"])
        print(f"median: clear {clear:.0f} writes/s, mutual TLS {mtls:.0f} writes/s, "
              f"ratio mTLS/clear {mtls / clear:.2f} ({args.clients} proposers, "
              f"{args.seconds:g}s rounds)")


if __name__ == "__main__":
    main()

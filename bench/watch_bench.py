"""Watch fan-out: one registration reaching N blocking watchers on one server.

A single `meshlet server` (a one-member Raft cluster, fsync on) serves N blocking
queries ``GET /v1/services/web/instances?index=I&wait=120s``, one per connection as N
agents would hold them. Once all N are parked (the server's
``meshlet_api_blocking_queries`` gauge says so), one instance is registered and the
time from just before that PUT to the arrival of each watcher's answer is measured.
Arrival is the kernel's receive timestamp of the answer's first bytes on each client
socket (``SO_TIMESTAMPNS``), so this process's own pace of reading 10,000 sockets
adds nothing. Every answer is checked: 200, the new instance in its body, the index
header past I. Reported per N: p50, p99 and max latency, the registration's own
acknowledgement, and the server's resident memory with the watchers parked.

The same sizes run again with each watcher's connection handed to aiohttp first
(``--aiohttp``), as every watch was served before the fast lane parked them
(``api/watch_hub.py``). Sizes alternate over ``--rounds`` rounds; the median p99 of
each is reported. Measures and reports; never fails.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import secrets
import socket
import statistics
import struct
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

SO_TIMESTAMPNS = 35  # Linux; not in Python's socket module
JOIN_TOKEN = secrets.token_urlsafe(32)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Server:
    def __init__(self, root: Path, max_connections: int) -> None:
        self.root = root
        self.http = free_port()
        self.url = f"http://127.0.0.1:{self.http}"
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "meshlet", "server", "--id", "s1", "--data-dir",
             str(root / "s1"), "--http", f"127.0.0.1:{self.http}", "--raft",
             f"127.0.0.1:{free_port()}", "--max-connections", str(max_connections)],
            env={**os.environ, "MESHLET_JOIN_TOKEN": JOIN_TOKEN},
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self.token = ""

    def wait_ready(self, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            tokens = list(self.root.glob("*/management.token"))
            if tokens:
                self.token = tokens[0].read_text().strip()
                try:
                    status = self.call("GET", "/v1/status")
                    if status.get("state") == "leader" or status.get("leader"):
                        return
                except (OSError, urllib.error.URLError, ValueError):
                    pass
            time.sleep(0.1)
        raise RuntimeError("the server did not become leader")

    def call(self, method: str, path: str, body: Any = None) -> Any:
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(self.url + path, data=data, method=method,
                                         headers={"X-Meshlet-Token": self.token})
        with urllib.request.urlopen(request, timeout=30) as resp:
            return json.loads(resp.read())

    def index_of(self, path: str) -> int:
        request = urllib.request.Request(self.url + path,
                                         headers={"X-Meshlet-Token": self.token})
        with urllib.request.urlopen(request, timeout=30) as resp:
            resp.read()
            return int(resp.headers["X-Meshlet-Index"])

    def parked(self) -> int:
        with urllib.request.urlopen(self.url + "/metrics", timeout=30) as resp:
            for line in resp.read().decode().splitlines():
                if line.startswith("meshlet_api_blocking_queries "):
                    return int(float(line.split()[1]))
        return 0

    def rss_mib(self) -> float:
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
        return 0.0

    def register(self, n: int) -> None:
        self.call("PUT", "/v1/catalog/register", {
            "service": "web", "id": f"web-{n}", "address": "127.0.0.1", "port": 1000 + n})

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def open_watchers(server: Server, n: int, index: int, lane: str) -> list[socket.socket]:
    """``lane`` "aiohttp": each connection's first request is another one (a status
    read), which hands it to aiohttp for good, as the server was before its fast lane
    parked watches."""
    auth = f"Host: 127.0.0.1\r\nX-Meshlet-Token: {server.token}\r\n\r\n"
    request = f"GET /v1/services/web/instances?index={index}&wait=120s HTTP/1.1\r\n{auth}"
    socks = []
    for _ in range(n):
        s = socket.create_connection(("127.0.0.1", server.http), timeout=30)
        if lane == "aiohttp":
            s.sendall(f"GET /v1/status HTTP/1.1\r\n{auth}".encode())
            read_answer(s)
        s.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
        s.sendall(request.encode())
        socks.append(s)
    return socks


def read_answer(s: socket.socket) -> tuple[int, bytes]:
    """The kernel's arrival time (ns, realtime) of the answer's first bytes, and it."""
    data, ancillary, _, _ = s.recvmsg(1 << 16, socket.CMSG_SPACE(16))
    stamp = 0
    for level, kind, raw in ancillary:
        if level == socket.SOL_SOCKET and kind == SO_TIMESTAMPNS:
            seconds, nanos = struct.unpack("qq", raw[:16])
            stamp = seconds * 1_000_000_000 + nanos
    head, _, body = data.partition(b"\r\n\r\n")
    length = next((int(line.split(b":")[1]) for line in head.split(b"\r\n")
                   if line.lower().startswith(b"content-length:")), 0)
    while len(body) < length:
        more = s.recv(1 << 16)
        if not more:
            break
        body += more
    return stamp, head + b"\r\n\r\n" + body


FLOOR = """
import asyncio, socket, sys, time
from array import array
import uvloop
from meshlet.api.parallel_send import Senders
n, size = int(sys.argv[1]), int(sys.argv[2])
transports = []
class Accepted(asyncio.Protocol):
    def connection_made(self, transport):
        transports.append(transport)
async def main():
    server = await asyncio.get_running_loop().create_server(Accepted, "127.0.0.1", 0,
                                                            backlog=1024)
    port = server.sockets[0].getsockname()[1]
    clients = []
    for _ in range(n):
        client = socket.socket()
        client.setblocking(False)
        try:
            client.connect(("127.0.0.1", port))
        except BlockingIOError:
            pass
        clients.append(client)
        if len(clients) % 256 == 0:
            await asyncio.sleep(0.005)  # let the loop accept them
    while len(transports) < n:
        await asyncio.sleep(0.01)
    data = b"x" * size
    started = time.perf_counter()
    for transport in transports:
        transport.write(data)
    one = (time.perf_counter() - started) / n * 1e6
    await asyncio.sleep(0.1)
    for client in clients:  # drained, so that the second pass meets empty buffers
        while True:
            try:
                if not client.recv(1 << 16):
                    break
            except BlockingIOError:
                break
    fds = array("i", [t.get_extra_info("socket").fileno() for t in transports])
    senders = Senders()
    started = time.perf_counter()
    senders.send(fds, data)
    print(one, (time.perf_counter() - started) / n * 1e6, senders.ways)
    senders.close()
uvloop.install()
asyncio.run(main())
"""


def send_floor_us(n: int, size: int) -> tuple[float, float, int]:
    """The kernel's share, with nothing else around it (in a process of its own; both
    ends of every connection count against its descriptors): µs per ``transport.write``
    of ``size`` bytes from one uvloop thread to ``n`` idle loopback connections; then
    µs per socket for the server's own sender (``parallel_send.Senders``), which splits
    the sends over its threads (the third number)."""
    descriptors = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    n = min(n, (descriptors - 100) // 2)
    out = subprocess.run([sys.executable, "-c", FLOOR, str(n), str(size)], check=True,
                         capture_output=True, text=True, timeout=300).stdout
    one, split, ways = out.split()
    return float(one), float(split), int(ways)


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def round_of(server: Server, n: int, serial: int, lane: str) -> dict[str, Any]:
    index = server.index_of("/v1/services/web/instances")
    socks = open_watchers(server, n, index, lane)
    deadline = time.monotonic() + 120
    while server.parked() < n and time.monotonic() < deadline:
        time.sleep(0.05)
    parked = server.parked()
    rss = server.rss_mib()
    started = time.time_ns()
    server.register(serial)
    acked = (time.time_ns() - started) / 1e6
    # Read nothing until every answer is in: a reader blocked on each socket in turn
    # would be woken by each send, and that wake-up, on this machine's other core, is
    # charged to the server's sends (on a network, the watchers' machines pay it). The
    # arrival times are the kernel's, so when they are read does not change them.
    while server.parked() > 0 and time.monotonic() < deadline + 120:
        time.sleep(0.01)
    latencies, wrong, size = [], 0, 0
    for s in socks:
        try:
            stamp, answer = read_answer(s)
        except OSError:
            wrong += 1
            continue
        size = len(answer)
        ok = answer.startswith(b"HTTP/1.1 200") and f'"web-{serial}"'.encode() in answer
        if ok and stamp:
            latencies.append((stamp - started) / 1e6)
        else:
            wrong += 1
    for s in socks:  # reset, not closed: 10,000 TIME_WAITs would burden later rounds
        s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        s.close()
    return {"lane": lane, "watchers": n, "parked": parked, "answered": len(latencies),
            "wrong": wrong, "register_ack_ms": round(acked, 1),
            "p50_ms": round(percentile(latencies, 0.5), 1) if latencies else None,
            "p99_ms": round(percentile(latencies, 0.99), 1) if latencies else None,
            "max_ms": round(max(latencies), 1) if latencies else None,
            "server_rss_mib": round(rss, 1), "answer_bytes": size}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--watchers", default="1000,4000,10000",
                        help="watchers per round on the fast lane")
    parser.add_argument("--aiohttp", default="1000,4000",
                        help="watchers per round held by aiohttp instead ('' for none)")
    parser.add_argument("--rounds", type=int, default=3, help="rounds of each size")
    args = parser.parse_args()
    plan = [("fast", int(n)) for n in args.watchers.split(",") if n] + \
        [("aiohttp", int(n)) for n in args.aiohttp.split(",") if n]
    results: dict[tuple[str, int], list[float]] = {}
    floors: list[tuple[float, float, int]] = []
    size = 0
    with tempfile.TemporaryDirectory() as tmp:
        # Room for the largest round and this benchmark's own calls beside it (the
        # default, half of this machine's 20,000 descriptors, is exactly 10,000).
        server = Server(Path(tmp), max(n for _, n in plan) + 64)
        try:
            server.wait_ready()
            server.register(0)
            print(f"{'lane':>7} {'watchers':>8} {'parked':>7} {'answered':>8} {'wrong':>5} "
                  f"{'ack ms':>7} {'p50 ms':>7} {'p99 ms':>7} {'max ms':>7} {'RSS MiB':>8}")
            serial = 0
            for _ in range(args.rounds):  # the sizes alternate, round after round
                for lane, n in plan:
                    serial += 1
                    r = round_of(server, n, serial, lane)
                    if r["p99_ms"] is not None:
                        results.setdefault((lane, n), []).append(r["p99_ms"])
                    size = r["answer_bytes"] or size
                    print(f"{lane:>7} {r['watchers']:>8} {r['parked']:>7} {r['answered']:>8} "
                          f"{r['wrong']:>5} {r['register_ack_ms']:>7} {r['p50_ms']!s:>7} "
                          f"{r['p99_ms']!s:>7} {r['max_ms']!s:>7} {r['server_rss_mib']:>8}",
                          flush=True)
                floors.append(send_floor_us(max(n for _, n in plan), size))
        finally:
            server.stop()
    largest = max(n for _, n in plan)
    one = statistics.median(f[0] for f in floors)
    split = statistics.median(f[1] for f in floors)
    print(f"\nthe sends alone (no Python around them, one per round), from one uvloop "
          f"thread: {', '.join(f'{f[0]:.1f}' for f in floors)} µs each; {largest} of "
          f"them take {one * largest / 1000:.0f} ms (median)")
    print(f"the same by the server's sender over {floors[0][2]} thread(s): "
          f"{', '.join(f'{f[1]:.1f}' for f in floors)} µs per socket; {largest} take "
          f"{split * largest / 1000:.0f} ms (median)")
    print("median p99 over the rounds:")
    for (lane, n), p99s in results.items():
        print(f"  {lane:>7} {n:>6} watchers: {statistics.median(p99s):.1f} ms "
              f"(rounds: {', '.join(f'{v:g}' for v in p99s)})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

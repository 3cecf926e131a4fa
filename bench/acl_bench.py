"""The API's requests/s with ACL tokens checked against without, in one run.

Two servers run side by side, each in its own process (uvloop, as `meshlet server`
runs): one as shipped, checking every request's token, and one with the check turned
off (``ServerOptions.enforce_acl``, a knob for this baseline only; no flag sets it).
The load is keep-alive HTTP/1.1 connections from this process, each sending one
request at a time: KV puts through the fast lane, KV puts through aiohttp (each
connection's first request, a GET, hands it over), and KV reads (aiohttp). Rounds
alternate between the servers so the machine's noise hits them alike; the table gives
medians, and the median of the per-round ratios with / without, with their range.

This measures; it never fails. Usage:
    python bench/acl_bench.py [--seconds 3] [--connections 32] [--rounds 3]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

VALUE = b"v" * 64


def serve(enforce: bool) -> None:
    """The child: a server on a free port; prints its URL and token, runs until stdin
    closes."""
    from meshlet.loop import install_uvloop
    from meshlet.server.main import Server, ServerOptions
    install_uvloop()

    async def run(data: Path) -> None:
        server = await Server.start(data, "127.0.0.1", 0, ServerOptions(enforce_acl=enforce))
        try:
            while server.acl.token() is None:
                await asyncio.sleep(0.01)
            print(json.dumps({"url": server.url, "token": server.acl.token()}), flush=True)
            await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)
        finally:
            await server.stop()
    with tempfile.TemporaryDirectory(prefix="meshlet-acl-bench-") as data:
        asyncio.run(run(Path(data)))


async def one(reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
              request: bytes) -> int:
    writer.write(request)
    head = await reader.readuntil(b"\r\n\r\n")
    length = int(head.split(b"Content-Length: ", 1)[1].split(b"\r\n", 1)[0])
    await reader.readexactly(length)
    return int(head[9:12])


async def load(url: str, token: str, kind: str, connections: int, seconds: float) -> float:
    """Answered requests per second of ``kind`` (fast-put, put, get)."""
    host, port = url.removeprefix("http://").rsplit(":", 1)
    auth = f"X-Meshlet-Token: {token}\r\n".encode()
    put = (b"PUT /v1/kv/bench/%d HTTP/1.1\r\nHost: b\r\n" + auth
           + b"Content-Length: %d\r\n\r\n" % len(VALUE) + VALUE)
    get = b"GET /v1/kv/bench/0 HTTP/1.1\r\nHost: b\r\n" + auth + b"\r\n"
    counts = [0] * connections
    deadline = time.monotonic() + seconds

    async def worker(n: int) -> None:
        reader, writer = await asyncio.open_connection(host, int(port))
        if kind != "fast-put":  # the first request that is not a put hands it to aiohttp
            await one(reader, writer, b"GET /v1/kv/bench/0 HTTP/1.1\r\nHost: b\r\n"
                      + auth + b"\r\n")
        while time.monotonic() < deadline:
            status = await one(reader, writer, get if kind == "get" else put % (n % 100))
            assert status == 200, status
            counts[n] += 1
        writer.close()
    await asyncio.gather(*(worker(n) for n in range(connections)))
    return sum(counts) / seconds


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--serve", choices=["acl", "open"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        serve(args.serve == "acl")
        return 0
    servers = {}
    for mode in ("acl", "open"):
        proc = subprocess.Popen([sys.executable, __file__, "--serve", mode],
                                stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        assert proc.stdout is not None
        servers[mode] = (proc, json.loads(proc.stdout.readline()))
    results: dict[tuple[str, str], list[float]] = {}
    try:
        for round_ in range(args.rounds):
            for kind in ("fast-put", "put", "get"):
                order = ["acl", "open"] if round_ % 2 == 0 else ["open", "acl"]
                for mode in order:  # each goes first in every other round
                    info = servers[mode][1]
                    rate = asyncio.run(load(info["url"], info["token"], kind,
                                            args.connections, args.seconds))
                    results.setdefault((kind, mode), []).append(rate)
    finally:
        for proc, _ in servers.values():
            assert proc.stdin is not None
            proc.stdin.close()
            proc.wait(30)
    print(f"| request ({args.connections} connections) | with tokens (req/s) | "
          "without (req/s) | with / without (range) |")
    print("|---|---|---|---|")
    names = {"fast-put": "KV put, fast lane", "put": "KV put, aiohttp",
             "get": "KV get, aiohttp"}
    for kind, name in names.items():
        on, off = results[(kind, "acl")], results[(kind, "open")]
        ratios = [a / b for a, b in zip(on, off, strict=True)]
        print(f"| {name} | {statistics.median(on):,.0f} | {statistics.median(off):,.0f} | "
              f"{statistics.median(ratios):.3f} ({min(ratios):.2f} to {max(ratios):.2f}) |")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""What mutual TLS between sidecars costs: one keep-alive client through a caller's
sidecar to a destination's sidecar (in another process) and its app, with and
without TLS, in alternating rounds of the same run. Reports requests/s, the latency
each request adds, and the ratio. Measures; never fails.

    .venv/bin/python bench/mtls_bench.py --seconds 3 --rounds 3
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.integration.test_proxy_http import start_backend
from tests.integration.test_proxy_mtls import caller_snapshot, destination_snapshot
from tests.mesh_certs import MeshCa

from meshlet.loop import install_uvloop
from meshlet.proxy.config import TlsConfig
from meshlet.proxy.sidecar import Sidecar


def destination(tls: TlsConfig | None, ports: multiprocessing.Queue, seconds: float) -> None:
    async def run() -> None:
        app, port = await start_backend("app")
        sidecar = Sidecar(destination_snapshot(port, tls))  # type: ignore[arg-type]
        await sidecar.start()
        ports.put(sidecar.ports()["inbound:web"])
        await asyncio.sleep(seconds)
        await sidecar.stop(0)
        await app.cleanup()
    install_uvloop()
    asyncio.run(run())


async def drive(tls: TlsConfig | None, inbound: int, seconds: float) -> float:
    caller = Sidecar(caller_snapshot([inbound], tls))  # type: ignore[arg-type]
    await caller.start()
    reader, writer = await asyncio.open_connection("127.0.0.1", caller.ports()["outbound:web"])
    done, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        writer.write(b"GET /?size=100 HTTP/1.1\r\nHost: web\r\n\r\n")
        await reader.readuntil(b"\r\n\r\n")
        await reader.readexactly(100)
        done += 1
    rate = done / (time.perf_counter() - start)
    writer.close()
    await caller.stop(0)
    return rate


def one_round(ca: MeshCa, mtls: bool, seconds: float) -> float:
    ports: multiprocessing.Queue = multiprocessing.get_context("fork").Queue()
    dest_tls = ca.tls("web", "-bench") if mtls else None
    child = multiprocessing.get_context("fork").Process(
        target=destination, args=(dest_tls, ports, seconds + 10))
    child.start()
    try:
        inbound = ports.get(timeout=30)
        caller_tls = ca.tls("client", "-bench") if mtls else None
        return asyncio.run(drive(caller_tls, inbound, seconds))
    finally:
        child.kill()
        child.join()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    install_uvloop()
    with tempfile.TemporaryDirectory() as tmp:
        ca = MeshCa.make(Path(tmp))
        plain, mtls = [], []
        for _ in range(args.rounds):
            plain.append(one_round(ca, False, args.seconds))
            mtls.append(one_round(ca, True, args.seconds))
            print(f"round: plaintext {plain[-1]:.0f} req/s, mTLS {mtls[-1]:.0f} req/s",
                  flush=True)
    p, m = statistics.median(plain), statistics.median(mtls)
    print(f"median: plaintext {p:.0f} req/s ({1000 / p:.3f} ms), mTLS {m:.0f} req/s "
          f"({1000 / m:.3f} ms); mTLS/plaintext {m / p:.2f}, "
          f"+{1000 / m - 1000 / p:.3f} ms per request")


if __name__ == "__main__":
    main()

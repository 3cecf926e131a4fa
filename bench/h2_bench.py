"""HTTP/2 and gRPC through the sidecar versus through Envoy, in one run.

Setup as in ``proxy_bench.py``: each proxy pinned to core 0, the load (h2load, from
Debian's nghttp2-client) and the backends on core 1. Three workloads, each through
meshlet and Envoy (one worker, router only):

* ``h2 → HTTP/1.1``: h2load, --clients connections with --streams streams each (the
  issue's 10 × 10), GETs to nginx over HTTP/1.1 (the sidecar's ``protocol: http``);
* ``h2 → h2``: the same to nginx's h2c port (``protocol: http2``; Envoy with an
  HTTP/2 cluster);
* ``gRPC unary``: h2load POSTing a gRPC message (``content-type: application/grpc``)
  to a grpcio server (``protocol: grpc``), 10 connections × 10 streams.

Reported: requests (calls) per second, p50/p99 from h2load's per-request log, the
proxy's CPU time per request, and requests per proxy-CPU-second relative to Envoy (the
"per core" figure: a grpcio backend caps the calls per second of both alike). Rounds
alternate between the proxies so the machine's noise hits them alike.

This measures; it never fails. Usage:
    python bench/h2_bench.py [--seconds 4] [--rounds 3] [--clients 10] [--streams 10]
"""

from __future__ import annotations

import argparse
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from proxy_bench import (
    LOAD_CORE,
    PROXY_CORE,
    clean_up,
    compiled_build,
    cpu_seconds,
    free_port,
    publish,
    spread,
    start_envoy,
    start_meshlet,
    wait_listening,
)

GRPC_SERVER = """
import sys
from concurrent import futures
import grpc
def say(request, context):
    return request
handler = grpc.method_handlers_generic_handler(
    "bench.Echo", {"Say": grpc.unary_unary_rpc_method_handler(say)})
server = grpc.server(futures.ThreadPoolExecutor(max_workers=8), handlers=[handler])
server.add_insecure_port("127.0.0.1:" + sys.argv[1])
server.start()
server.wait_for_termination()
"""
GRPC_MESSAGE = b"\x00\x00\x00\x00\x05hello"  # uncompressed, 5 bytes


@dataclass
class Result:
    workload: str
    target: str
    rps: float
    p50_ms: float
    p99_ms: float
    cpu_us: float | None


def start_nginx(work: Path) -> tuple[subprocess.Popen[bytes], int, int]:
    """nginx answering on an HTTP/1.1 port and an h2c port."""
    http1, h2c = free_port(), free_port()
    conf = work / "nginx-backend.conf"
    conf.write_text(f"""
worker_processes 1; daemon off; pid {work}/nginx-backend.pid; error_log stderr error;
events {{ worker_connections 4096; }}
http {{
  access_log off; keepalive_requests 1000000; http2_max_requests 1000000;
  client_body_temp_path {work}; proxy_temp_path {work}; fastcgi_temp_path {work};
  uwsgi_temp_path {work}; scgi_temp_path {work};
  server {{ listen 127.0.0.1:{http1}; location / {{ return 200 "hello\\n"; }} }}
  server {{ listen 127.0.0.1:{h2c} http2; location / {{ return 200 "hello\\n"; }} }}
}}""")
    proc = subprocess.Popen(["taskset", "-c", LOAD_CORE, shutil.which("nginx") or "nginx",
                             "-c", str(conf), "-p", str(work)], stderr=subprocess.DEVNULL)
    wait_listening(http1)
    wait_listening(h2c)
    return proc, http1, h2c


def start_grpc_server() -> tuple[subprocess.Popen[bytes], int]:
    port = free_port()
    proc = subprocess.Popen(["taskset", "-c", LOAD_CORE, sys.executable, "-c", GRPC_SERVER,
                             str(port)])
    wait_listening(port)
    return proc, port


def run_h2load(port: int, work: Path, args: argparse.Namespace, grpc: bool,
               seconds: float) -> tuple[float, float, float, int]:
    """(requests/s, p50 ms, p99 ms, requests done) of one h2load run."""
    log = work / "h2load.log"
    command = ["taskset", "-c", LOAD_CORE, "h2load", "-c", str(args.clients),
               "-m", str(args.streams), "-D", str(max(1, round(seconds))),
               "--warm-up-time", "1", "--log-file", str(log)]
    if grpc:
        body = work / "grpc-message"
        body.write_bytes(GRPC_MESSAGE)
        command += ["-d", str(body), "-H", "content-type: application/grpc",
                    "-H", "te: trailers", f"http://127.0.0.1:{port}/bench.Echo/Say"]
    else:
        command.append(f"http://127.0.0.1:{port}/")
    out = subprocess.run(command, capture_output=True, text=True, check=False).stdout
    latencies = sorted(int(line.split()[2]) for line in log.read_text().splitlines()
                       if len(line.split()) >= 3 and line.split()[1] == "200")
    log.unlink()
    done = len(latencies)
    if not done:
        raise RuntimeError(f"h2load got no 200:\n{out}")
    finished = re.search(r"finished in .*?, ([\d.]+) req/s", out)
    rate = float(finished.group(1)) if finished else done / seconds
    return (rate, latencies[done // 2] / 1000,
            latencies[min(done - 1, int(done * 0.99))] / 1000, done)


def measure(workload: str, target: str, port: int, pid: int, work: Path,
            args: argparse.Namespace) -> Result:
    grpc = workload.startswith("gRPC")
    run_h2load(port, work, args, grpc, 1)  # warm up connections and pools
    before = cpu_seconds(pid)
    rps, p50, p99, done = run_h2load(port, work, args, grpc, args.seconds)
    cpu = (cpu_seconds(pid) - before) / done * 1e6 if done else None
    return Result(workload, target, rps, p50, p99, cpu)


def report(rounds: list[list[Result]], args: argparse.Namespace) -> str:
    lines = [f"Each proxy pinned to core {PROXY_CORE}; h2load and the backends on core "
             f"{LOAD_CORE}; {args.clients} connections × {args.streams} streams, "
             f"{args.seconds:.0f} s per run; median of {len(rounds)} alternating round(s).",
             "", "| workload | target | req/s | p50 ms | p99 ms | proxy CPU µs/req | "
             "req per CPU-s vs Envoy |", "|---|---|---|---|---|---|---|"]
    for workload, target in [(r.workload, r.target) for r in rounds[0]]:
        rows = [r for one in rounds for r in one if (r.workload, r.target) == (workload, target)]
        pairs = [(r, e) for one in rounds for r in one for e in one
                 if (r.workload, r.target) == (workload, target)
                 and (e.workload, e.target) == (workload, "envoy")
                 and r.cpu_us and e.cpu_us]
        cpus = [r.cpu_us for r in rows if r.cpu_us is not None]
        ratio = spread([e.cpu_us / r.cpu_us for r, e in pairs  # type: ignore[operator]
                        ]) if pairs and target != "envoy" else ""
        lines.append(
            f"| {workload} | {target} | {statistics.median(r.rps for r in rows):,.0f} | "
            f"{statistics.median(r.p50_ms for r in rows):.2f} | "
            f"{statistics.median(r.p99_ms for r in rows):.2f} | "
            f"{statistics.median(cpus):.1f} | {ratio} |" if cpus else "")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=4.0)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--clients", type=int, default=10)
    parser.add_argument("--streams", type=int, default=10)
    parser.add_argument("--out", type=Path, default=None, help="also write the table here")
    args = parser.parse_args()
    for tool in ("h2load", "nginx"):
        if not shutil.which(tool) and not Path(f"/usr/sbin/{tool}").exists():
            print(f"bench: {tool} is not installed (Debian nghttp2-client, nginx-light)",
                  file=sys.stderr)
            return 0
    work = Path(tempfile.mkdtemp(prefix="meshlet-h2bench-"))
    procs: list[subprocess.Popen[bytes]] = []
    try:
        nginx, http1, h2c = start_nginx(work)
        grpc_server, grpc_port = start_grpc_server()
        procs += [nginx, grpc_server]
        targets: list[tuple[str, str, int, int]] = []
        for tag, (workload, backend, protocol) in enumerate((
                ("h2 → HTTP/1.1", http1, "http"), ("h2 → h2", h2c, "http2"),
                ("gRPC unary", grpc_port, "grpc"))):
            mesh, port = start_meshlet(work, backend, {}, f"h2-{tag}", None, protocol)
            procs.append(mesh)
            targets.append((workload, "meshlet", port, mesh.pid))
            envoy = start_envoy(work, backend, protocol != "http", f"-{tag}")
            if envoy is None:
                print("bench: envoy not found; skipping it", file=sys.stderr)
                continue
            procs.append(envoy[0])
            targets.append((workload, "envoy", envoy[1], envoy[0].pid))
        if not compiled_build():
            print("bench: meshlet runs as pure Python (not compiled)", file=sys.stderr)
        rounds = []
        for _ in range(max(args.rounds, 1)):
            rounds.append([measure(workload, target, port, pid, work, args)
                           for workload, target, port, pid in targets])
        publish(report(rounds, args), args.out)
    finally:
        clean_up(procs, work)
    return 0


if __name__ == "__main__":
    sys.exit(main())

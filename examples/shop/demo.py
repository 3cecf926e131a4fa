"""The demo: bring up the shop, drive traffic through the frontend, report the spread.

Usage: python examples/shop/demo.py [--seconds N] [--keep]
"""

from __future__ import annotations

import argparse
import collections
import http.client
import json
import subprocess
import sys
import threading
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent


def meshlet(*args: str) -> str:
    proc = subprocess.run([sys.executable, "-m", "meshlet", *args], capture_output=True,
                          text=True, check=False)
    if proc.returncode != 0:
        sys.exit(f"demo: meshlet {' '.join(args)} failed: {proc.stderr.strip()}")
    return proc.stdout


def drive(host: str, port: int, seconds: float, workers: int) -> tuple[int, int,
                                                                       collections.Counter[str]]:
    served: collections.Counter[str] = collections.Counter()
    totals = {"requests": 0, "ok": 0}
    lock = threading.Lock()
    deadline = time.monotonic() + seconds

    def worker() -> None:
        conn = http.client.HTTPConnection(host, port, timeout=10)
        while time.monotonic() < deadline:
            try:
                conn.request("GET", "/")
                resp = conn.getresponse()
                body = resp.read()
                ok = resp.status == 200
                catalog = json.loads(body)["catalog"] if ok else None
            except (OSError, http.client.HTTPException, ValueError):
                conn.close()
                conn = http.client.HTTPConnection(host, port, timeout=10)
                ok, catalog = False, None
            with lock:
                totals["requests"] += 1
                totals["ok"] += ok
                if catalog:
                    served[catalog] += 1
        conn.close()

    threads = [threading.Thread(target=worker) for _ in range(workers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return totals["requests"], totals["ok"], served


def print_where_to_look(api: str, catalog: list[dict[str, object]], kept: bool) -> None:
    """The addresses a person opens next: the UI, the live view, every metrics endpoint."""
    print()
    if not kept:
        print("demo: the mesh stops now; `make demo ARGS=--keep` leaves it up to look at:")
    print(f"  web UI         {api}/ui/   (or `meshlet ui`: opens it logged in)")
    print("  live view      meshlet top")
    print(f"  server metrics {api}/metrics")
    for inst in sorted(catalog, key=lambda i: str(i["id"])):
        meta = inst.get("meta")
        url = meta.get("metrics") if isinstance(meta, dict) else None
        if url:
            print(f"  {inst['id']:<14} {url}/metrics")
    print("  Prometheus     meshlet prometheus-sd targets.json  (a file_sd target file)")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=float, default=4.0)
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--keep", action="store_true", help="leave the mesh running")
    args = parser.parse_args()

    print("demo: starting the shop (frontend -> catalog x3 -> pricing) ...", flush=True)
    info = json.loads(meshlet("-o", "json", "up", str(HERE / "meshlet.yaml"), "--detach"))
    try:
        api = info["api"]
        # Every hop inside the mesh is mutual TLS; outside clients come in through the
        # agent's ingress gateway, which publishes the frontend in plaintext.
        frontend = next(w for w in info["workloads"]
                        if w["service"] == "frontend" and w.get("ingress"))
        host, port = frontend["address"].rsplit(":", 1)
        deadline = time.monotonic() + 30
        while True:  # wait until every instance passes its health check
            catalog = json.loads(meshlet("--addr", api, "-o", "json", "instances", "catalog"))
            services = json.loads(meshlet("--addr", api, "-o", "json", "services"))
            if all(s["passing"] == s["instances"] for s in services) and catalog:
                break
            if time.monotonic() > deadline:
                sys.exit("demo: services did not become healthy within 30s")
            time.sleep(0.1)
        print(f"demo: API at {api}; frontend at http://{frontend['address']}/")
        print(f"demo: driving traffic for {args.seconds:.0f}s with {args.workers} "
              "keep-alive clients ...", flush=True)
        total, ok, served = drive(host, int(port), args.seconds, args.workers)
        print()
        print(f"{'CATALOG INSTANCE':<18}{'REQUESTS':>10}{'SHARE':>9}")
        for inst in sorted(i["id"] for i in catalog):
            n = served.get(inst, 0)
            print(f"{inst:<18}{n:>10}{(100 * n / max(ok, 1)):>8.1f}%")
        print()
        print(f"demo: {total} requests, {ok} ok, spread across {len(served)} catalog instances",
              flush=True)
        print_where_to_look(api, catalog, kept=args.keep)
    finally:
        if args.keep:
            print("demo: left running; try `meshlet services`, then `meshlet down`")
        else:
            meshlet("down")
    return 0 if total and ok == total and len(served) == 3 else 1


if __name__ == "__main__":
    sys.exit(main())

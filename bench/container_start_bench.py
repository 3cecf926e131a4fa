"""Container start to first byte served: `meshlet run -d` of a busybox httpd image
against `podman run -d` of the same image on the same network (podman joins meshlet's
network through meshlet-cni), in alternating rounds of the same run. Each round
times the run command, then asks the address the container got (the network's next
free one) from the host until httpd's first byte arrives.
Needs root, runc, podman and busybox-static. Measures; never fails.

    sudo .venv/bin/python bench/container_start_bench.py --rounds 10

podman runs as its experts would for a fair start time: runc, the CNI backend, no
events logger, storage on overlay (vfs copies the image for every container).
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.e2e.helpers import free_port, meshlet, up_token
from tests.images import busybox_rootfs
from tests.netns.test_podman_cni import Podman

NETWORK = "benchnet"
IMAGE = "localhost/bench-busybox:1"
HTTPD = ["httpd", "-f", "-p", "8080", "-h", "/www"]


# An anchor container holds 10.240.0.2 and keeps the network's bridge (and so the
# route to it) up between rounds; each round's container gets the next address.
ADDRESS = "10.240.0.3"


def check_route(address: str) -> None:
    """Refuse to poll an address that would leave the machine: it must route through
    one of meshlet's bridges."""
    route = subprocess.run(["ip", "-o", "route", "get", address], capture_output=True,
                           text=True, check=False).stdout
    if " dev mlb" not in route:
        raise RuntimeError(f"{address} does not route through a meshlet bridge: {route}")


def answers(address: str) -> bool:
    try:
        with socket.create_connection((address, 8080), timeout=0.2) as conn:
            conn.sendall(b"GET / HTTP/1.0\r\n\r\n")
            return bool(conn.recv(1))
    except OSError:
        return False


def first_byte(address: str, deadline: float) -> float:
    """Poll until a GET to ``address``:8080 answers; the time it did."""
    while time.monotonic() < deadline:
        if answers(address):
            return time.monotonic()
        time.sleep(0.002)
    raise TimeoutError(f"{address}:8080 never answered")


def timed(start_command: Callable[[], None]) -> tuple[float, float]:
    """(run command returned, first byte served), seconds after the command began. The
    poll starts when the command returns (the container then runs, for both tools), so
    that no failed neighbour lookup of an address not yet there slows it down."""
    check_route(ADDRESS)
    deadline = time.monotonic() + 30
    while answers(ADDRESS):  # the last round's container is still going
        if time.monotonic() > deadline:
            raise TimeoutError("the previous container still answers")
    subprocess.run(["ip", "neigh", "flush", "to", ADDRESS], check=False)
    start = time.monotonic()
    start_command()
    returned = time.monotonic()
    return returned - start, first_byte(ADDRESS, start + 30) - start


def meshlet_round(home: Path, i: int) -> tuple[float, float]:
    name = f"bench{i}"
    found = timed(lambda: meshlet("run", "-d", "--name", name, "--network", NETWORK,
                                  "bench-image", home=home) and None)
    meshlet("rm", "-f", name, home=home)
    return found


def podman_round(pod: Podman, i: int) -> tuple[float, float]:
    name = f"pbench{i}"
    found = timed(lambda: pod("run", "-d", "--name", name, "--network", NETWORK, IMAGE,
                              *HTTPD) and None)
    pod("rm", "--force", "--time", "0", name)
    return found


def summary(label: str, rows: list[tuple[float, float]]) -> float:
    returned = [r[0] * 1000 for r in rows]
    served = sorted(r[1] * 1000 for r in rows)
    p90 = served[min(len(served) - 1, int(len(served) * 0.9))]
    print(f"{label:8s} run returns {statistics.median(returned):7.1f} ms   first byte "
          f"median {statistics.median(served):7.1f} ms  p90 {p90:7.1f} ms  "
          f"(n={len(rows)})")
    return statistics.median(served)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=10)
    args = parser.parse_args()
    if os.geteuid() != 0:
        sys.exit("needs root (runc, podman, network namespaces)")
    with tempfile.TemporaryDirectory(prefix="mlbench-") as tmp:
        home = Path(tmp) / "home"
        home.mkdir()
        short = Path(tempfile.mkdtemp(prefix="mlpod-"))
        pod = Podman(short / "p", driver="overlay")
        tar = busybox_rootfs(Path(tmp) / "busybox.tar")
        meshlet("up", "--detach", "--http", f"127.0.0.1:{free_port()}", home=home)
        try:
            meshlet("image", "import", str(tar), "--name", "bench-image", "--change",
                    json.dumps(HTTPD).join(["CMD ", ""]), home=home)
            meshlet("network", "create", NETWORK, "--subnet", "10.240.0.0/24", home=home)
            api = json.loads((home / "up.json").read_text())["api"]
            conflist = pod.root / "net.d" / f"{NETWORK}.conflist"
            conflist.write_text(json.dumps({"cniVersion": "1.0.0", "name": NETWORK,
                                            "plugins": [{"type": "meshlet", "server": api,
                                                         "token": up_token(home)}]}))
            conflist.chmod(0o600)
            pod("import", str(tar), IMAGE)
            meshlet("run", "-d", "--name", "anchor", "--network", NETWORK, "bench-image",
                    "sleep", "3600", home=home)
            meshlet_round(home, 0)  # warm-up: page cache, the layer's first extraction
            podman_round(pod, 0)
            ours: list[tuple[float, float]] = []
            theirs: list[tuple[float, float]] = []
            for i in range(1, args.rounds + 1):
                ours.append(meshlet_round(home, i))
                theirs.append(podman_round(pod, i))
            print(f"container start to first byte served, {args.rounds} alternating "
                  "rounds, same image, same network")
            mine = summary("meshlet", ours)
            peer = summary("podman", theirs)
            print(f"meshlet / podman (first byte, median): {mine / peer:.2f}")
        finally:
            pod("rm", "--all", "--force", "--time", "0", check=False)
            pod("rmi", "--all", "--force", check=False)
            meshlet("rm", "-f", "anchor", home=home, check=False)
            meshlet("network", "rm", NETWORK, home=home, check=False)
            meshlet("down", home=home, check=False)
            subprocess.run(["rm", "-rf", str(short)], check=False)


if __name__ == "__main__":
    main()

"""`meshlet capacity` on a real mesh: it counts exactly the requests sent through it."""

from __future__ import annotations

import http.client
import json
import signal
import struct
import subprocess
import sys
import threading
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from meshlet.observe.samples import parse
from tests.e2e.helpers import env_for, meshlet, wait_for
from tests.e2e.test_data_plane import Mesh, healthy_mesh

pytestmark = pytest.mark.e2e
SENT = 150


@pytest.fixture(scope="module")
def mesh(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Mesh]:
    yield from healthy_mesh(tmp_path_factory.mktemp("capacity"))


def served(mesh: Mesh) -> float:
    """Inbound requests the echo sidecars have counted, read as `capacity` reads them."""
    total = 0.0
    for inst in mesh.json("instances", "echo"):
        text = urllib.request.urlopen(f"{inst['meta']['metrics']}/metrics", timeout=5).read()
        total += sum(parse(text.decode(), 0.0, "echo").requests.values())
    return total


class Capacity:
    """`meshlet capacity` running in the background; its stderr read as it goes."""

    def __init__(self, mesh: Mesh, *args: str) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "meshlet", "--addr", mesh.addr, "capacity", "echo", *args],
            env=env_for(mesh.home), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        self.errors: list[str] = []
        self.reader = threading.Thread(target=self.read, daemon=True)
        self.reader.start()

    def read(self) -> None:
        for line in self.proc.stderr:  # type: ignore[union-attr]
            self.errors.append(line)

    def sampling(self) -> bool:
        assert self.proc.poll() is None, self.errors
        return any(line.startswith("sampling 3 of 3 instances of echo") for line in self.errors)

    def stop(self) -> str:
        """Ctrl-C: it takes a last scrape and reports."""
        self.proc.send_signal(signal.SIGINT)
        out, _ = self.proc.communicate(timeout=60)
        self.reader.join(10)
        assert self.proc.returncode == 0, self.errors
        return out


def test_capacity_counts_every_request_sent_and_plots_them(mesh: Mesh, tmp_path: Path) -> None:
    port = mesh.echo_port()
    plot = tmp_path / "echo.png"
    run = Capacity(mesh, "--seconds", "600", "--interval", "0.5", "--target-rps", "1000",
                   "--plot", str(plot), "-o", "json")
    try:
        wait_for(run.sampling, 30, "capacity's first scrape of every echo sidecar")
        before = served(mesh)
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        for _ in range(SENT):
            conn.request("GET", "/work")
            response = conn.getresponse()
            response.read()
            assert response.status == 200
        conn.close()
        # Counted by every sidecar before capacity takes its last scrape.
        wait_for(lambda: served(mesh) == before + SENT, 15, "the sidecars to count them")
        body = json.loads(run.stop())
    finally:
        if run.proc.poll() is None:
            run.proc.kill()
            run.proc.wait(10)
    measures = {name: m["value"] for name, m in body["measures"].items()}
    assert body["requests"] == SENT and body["errors"] == 0
    assert sum(r["requests"] for r in body["replicas"]) == SENT
    assert len(body["replicas"]) == 3 and len(body["nodes"]) == 1
    # The formulas hold on the numbers printed beside them.
    assert measures["throughput"] == pytest.approx(SENT / body["seconds"])
    assert measures["load_per_replica"] == pytest.approx(measures["throughput"] / 3)
    assert measures["load_per_node"] == pytest.approx(measures["throughput"])
    assert measures["in_flight"] == pytest.approx(
        measures["throughput"] * measures["mean_latency"])
    assert measures["p50"] <= measures["p95"] <= measures["p99"]
    assert measures["replicas_needed"] >= 1
    assert body["cpu"].startswith("not measured")
    # Each replica's series adds up to what it served.
    for replica in body["replicas"]:
        times = [p["time"] for p in replica["series"]]
        assert times == sorted(times) and len(times) >= 1
    data = plot.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 0
    assert data[12:16] == b"IHDR"
    assert struct.unpack(">II", data[16:24]) == (900, 600)
    assert body["plot"] == str(plot)


def test_capacity_table_shows_each_formula(mesh: Mesh) -> None:
    out = meshlet("--addr", mesh.addr, "capacity", "echo", "--seconds", "0.4",
                  "--interval", "0.2", home=mesh.home).stdout
    for row in ("throughput          λ = requests / time", "in flight (Little)  L = λ × W",
                "capacity/replica    μ = concurrency / W",
                "replicas needed     ceil(target / (μ × U))",
                "cpu                 not measured"):
        assert row in out, out
    assert out.splitlines()[0].startswith("echo: 3 replicas on 1 node, sampled every 0.2s")


@pytest.mark.parametrize(("args", "message"), [
    (["echo", "--utilization", "0"],
     "meshlet: error: --utilization: must be more than 0 and at most 1 (got 0)"),
    (["echo", "--seconds", "ten"], "meshlet: error: --seconds: 'ten' is not a number"),
    (["echo", "--concurrency", "1.5"],
     "meshlet: error: --concurrency: '1.5' is not a whole number"),
    (["echo", "--seconds", "1", "--interval", "5"],
     "meshlet: error: --interval (5s) is longer than --seconds (1s)"),
    (["echo", "--plot", "out.svg"],
     "meshlet: error: --plot out.svg: the plot is a PNG: name it FILE.png"),
    (["nope"], "meshlet: error: service 'nope' is not known"),
    (["echo", "--target-rps", "-3"],
     "meshlet: error: --target-rps: must be at least 0 (got -3)"),
])
def test_bad_input_is_one_line(mesh: Mesh, args: list[str], message: str) -> None:
    bad = meshlet("--addr", mesh.addr, "capacity", *args, home=mesh.home, check=False)
    assert bad.returncode == 1
    assert bad.stderr == message + "\n"

"""The data plane end to end: real `meshlet up`, real app processes, real faults."""

from __future__ import annotations

import http.client
import json
import os
import signal
import subprocess
import sys
import threading
import urllib.request
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.helpers import admin_get, env_for, free_port, meshlet, meshlet_json, wait_for
from tests.request_series import request_count

pytestmark = pytest.mark.e2e
MESH = Path(__file__).parent / "apps" / "mesh.yaml"


class Mesh:
    """``meshlet up`` on ``manifest``: two services, one of them ``upstream``, the other
    the caller whose sidecar the tests send traffic through."""

    def __init__(self, home: Path, manifest: Path = MESH, upstream: str = "echo") -> None:
        self.home = home
        self.upstream = upstream
        port = free_port()
        self.addr = f"http://127.0.0.1:{port}"
        self.log = home / "up.log"  # what `up` said, shown if the mesh never gets healthy
        with self.log.open("wb") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "meshlet", "up", str(manifest), "--http",
                 f"127.0.0.1:{port}"],
                env=env_for(home), stdout=log, stderr=subprocess.STDOUT)

    def json(self, *args: str) -> Any:
        return meshlet_json("--addr", self.addr, *args, home=self.home)

    def healthy(self) -> bool:
        try:
            services = self.json("services")
        except AssertionError:
            return False
        return len(services) == 2 and all(s["passing"] == s["instances"] for s in services)

    def config(self, *pairs: str) -> None:
        """Set the upstream's settings and wait until the caller's sidecar runs with them."""
        name = self.upstream
        meshlet("--addr", self.addr, "config", "set", name, *pairs, home=self.home)
        wanted = self.json("config", "get", name)["effective"]
        admin = self.json("instances", "caller")[0]["meta"]["admin"]

        def applied() -> bool:
            body = admin_get(admin, "/config")
            return bool(body["clusters"][f"outbound:{name}"]["effective"] == wanted)
        wait_for(applied, 15, f"the caller's sidecar to apply {pairs}")

    def echo_port(self) -> int:
        """The caller's outbound port for the upstream."""
        admin = self.json("instances", "caller")[0]["meta"]["admin"]
        body = admin_get(admin, "/config")
        return int(body["ports"][f"outbound:{self.upstream}"])

    def control(self, instance: dict[str, Any], **state: Any) -> None:
        query = "&".join(f"{k}={v}" for k, v in state.items())
        urllib.request.urlopen(
            f"http://127.0.0.1:{instance['meta']['app_port']}/control?{query}", timeout=5).read()

    def reset(self) -> None:
        for inst in self.json("instances", "echo"):
            self.control(inst, delay=0, status=200)
        self.config("lb=", "retry_on=", "max_requests=", "retry_budget_min_per_second=",
                    "retry_backoff=")


def healthy_mesh(home: Path, running: Mesh | None = None) -> Iterator[Mesh]:
    """A healthy test mesh under ``home`` (``running``, or the echo one), stopped when
    the generator closes."""
    running = running or Mesh(home)
    try:
        try:
            wait_for(running.healthy, 60, "the test mesh to be healthy")
        except AssertionError as exc:
            said = running.log.read_text(errors="replace")[-4000:]
            raise AssertionError(f"{exc}; `up` exited with {running.proc.poll()} and "
                                 f"said:\n{said}") from None
        yield running
    finally:
        running.proc.send_signal(signal.SIGTERM)
        running.proc.wait(60)


@pytest.fixture(scope="module")
def mesh(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Mesh]:
    yield from healthy_mesh(tmp_path_factory.mktemp("mesh"))


@pytest.fixture
def clean(mesh: Mesh) -> Iterator[Mesh]:
    wait_for(mesh.healthy, 60, "every echo replica to be healthy")
    yield mesh
    mesh.reset()


class Load:
    """Keep-alive GETs from a few threads until ``total`` requests have been made."""

    def __init__(self, port: int, total: int, workers: int = 4) -> None:
        self.port = port
        self.total = total
        self.lock = threading.Lock()
        self.started = 0
        self.outcomes: Counter[str] = Counter()
        self.served: Counter[str] = Counter()
        self.threads = [threading.Thread(target=self.run) for _ in range(workers)]

    def run(self) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
        while True:
            with self.lock:
                if self.started >= self.total:
                    break
                self.started += 1
            try:
                conn.request("GET", "/work")
                resp = conn.getresponse()
                body = resp.read()
                outcome = str(resp.status) if resp.status == 200 else \
                    f"{resp.status} {resp.getheader('x-meshlet-error')}"
                instance = json.loads(body)["instance"] if resp.status == 200 else None
            except (OSError, http.client.HTTPException) as exc:
                conn.close()
                conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
                outcome, instance = type(exc).__name__, None
            with self.lock:
                self.outcomes[outcome] += 1
                if instance:
                    self.served[instance] += 1
        conn.close()

    def __enter__(self) -> Load:
        for t in self.threads:
            t.start()
        return self

    def __exit__(self, *exc: object) -> None:
        for t in self.threads:
            t.join(120)

    def done(self) -> int:
        with self.lock:
            return sum(self.outcomes.values())


def test_kill_9_mid_run_keeps_999_per_mille(clean: Mesh) -> None:
    victim = clean.json("instances", "echo")[0]
    with Load(clean.echo_port(), 3000) as load:
        wait_for(lambda: load.done() >= 1000, 60, "the first thousand requests")
        os.kill(victim["pid"], signal.SIGKILL)
    ok = load.outcomes["200"]
    assert ok >= 0.999 * 3000, load.outcomes
    assert load.done() == 3000


def test_peak_ewma_avoids_a_replica_slowed_by_200ms(clean: Mesh) -> None:
    clean.config("lb=peak_ewma")
    slow = clean.json("instances", "echo")[1]
    clean.control(slow, delay=0.2)
    with Load(clean.echo_port(), 1500) as load:
        pass
    assert load.outcomes["200"] == 1500
    share = load.served[slow["id"]] / 1500
    assert share < 0.10, load.served


def test_retry_budget_caps_retries_when_every_replica_fails(clean: Mesh) -> None:
    clean.config("retry_on=503", "retry_budget_min_per_second=1", "retry_backoff=0s")
    replicas = clean.json("instances", "echo")
    for inst in replicas:
        clean.control(inst, status=503)
    attempts_before = inbound_requests(replicas)
    with Load(clean.echo_port(), 300) as load:
        pass
    assert load.outcomes == {"503 None": 300}  # the replicas' own 503s, passed on
    attempts = inbound_requests(replicas) - attempts_before
    # Unbudgeted, 2 retries each would make 900 attempts; the budget allows 300 + 20% + 10.
    assert 300 <= attempts <= 300 + 60 + 10


def inbound_requests(replicas: list[dict[str, Any]]) -> int:
    total = 0
    for inst in replicas:
        text = urllib.request.urlopen(f"{inst['meta']['metrics']}/metrics", timeout=5).read()
        total += int(request_count(text.decode(), direction="inbound"))
    return total


def test_breaker_overflow_returns_503_at_once(clean: Mesh) -> None:
    clean.config("max_requests=2")
    for inst in clean.json("instances", "echo"):
        clean.control(inst, delay=3)
    port = clean.echo_port()
    results: list[tuple[int, str | None]] = []

    def call() -> None:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        conn.request("GET", "/work")
        resp = conn.getresponse()
        resp.read()
        results.append((resp.status, resp.getheader("x-meshlet-error")))
    slow = [threading.Thread(target=call) for _ in range(2)]
    for t in slow:
        t.start()
    admin = clean.json("instances", "caller")[0]["meta"]["admin"]

    def two_active() -> bool:
        body = admin_get(admin, "/ready")
        return body["active_requests"] >= 2
    wait_for(two_active, 10, "two slow requests in flight")
    for _ in range(3):
        call()  # each returns while the two slow ones are still held by the replicas
    assert results == [(503, "breaker_open")] * 3
    assert all(t.is_alive() for t in slow)
    for t in slow:
        t.join(30)
    assert results[3:] == [(200, None), (200, None)]

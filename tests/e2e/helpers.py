"""Running the meshlet command as a user does, and checking what it leaves behind."""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from tests.conftest import wait_until as wait_for

__all__ = ["wait_for"]

REPO = Path(__file__).resolve().parents[2]
# Every server a test starts shares this cluster secret (`meshlet keygen` makes real ones).
JOIN_TOKEN = "test-join-token-0123456789abcdef"
SHOP = REPO / "examples" / "shop" / "meshlet.yaml"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def free_ports(n: int) -> list[int]:
    """``n`` distinct free ports (all held open while choosing, so none repeats)."""
    held = []
    for _ in range(n):
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        held.append(s)
    ports = [int(s.getsockname()[1]) for s in held]
    for s in held:
        s.close()
    return ports


def stop_processes(procs: dict[str, subprocess.Popen[bytes]], kill: bool = False) -> None:
    """Stop every process still running (SIGTERM, or SIGKILL with ``kill``)."""
    for proc in procs.values():
        if proc.poll() is None:
            proc.kill() if kill else proc.terminate()
            proc.wait(10)


def env_for(home: Path) -> dict[str, str]:
    env = dict(os.environ)
    env["MESHLET_HOME"] = str(home)
    env["MESHLET_JOIN_TOKEN"] = JOIN_TOKEN
    env.pop("MESHLET_ADDR", None)
    return env


def meshlet(*args: str, home: Path, check: bool = True,
            stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run([sys.executable, "-m", "meshlet", *args], capture_output=True,
                          text=True, env=env_for(home), input=stdin, timeout=90, check=False)
    if check and proc.returncode != 0:
        raise AssertionError(f"meshlet {' '.join(args)} failed: {proc.stderr}")
    return proc


@contextlib.contextmanager
def downed(home: Path) -> Iterator[Path]:
    """A MESHLET_HOME whose `up --detach`, if any, is brought down at the end even when
    the test fails."""
    try:
        yield home
    finally:
        meshlet("down", home=home, check=False)


def meshlet_json(*args: str, home: Path) -> Any:
    return json.loads(meshlet("-o", "json", *args, home=home).stdout)


def descendants(pid: int) -> set[int]:
    """Every process below ``pid`` (from /proc children lists)."""
    found: set[int] = set()
    stack = [pid]
    while stack:
        current = stack.pop()
        try:
            tasks = os.listdir(f"/proc/{current}/task")
        except OSError:
            continue
        for tid in tasks:
            try:
                with open(f"/proc/{current}/task/{tid}/children") as f:
                    children = {int(c) for c in f.read().split()}
            except OSError:
                continue
            stack.extend(children - found)
            found |= children
    return found


def alive(pids: set[int]) -> set[int]:
    live = set()
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat") as f:
                if f.read().split(") ", 1)[1].startswith("Z"):
                    continue
        except OSError:
            continue
        live.add(pid)
    return live


class Traffic:
    """Keep-alive GETs against one address from a few threads, counting outcomes."""

    def __init__(self, address: str, workers: int = 3) -> None:
        self.host, port = address.rsplit(":", 1)
        self.port = int(port)
        self.ok = 0
        self.failed: list[str] = []
        self.catalogs: dict[str, int] = {}
        self.stop = threading.Event()
        self.lock = threading.Lock()
        self.threads = [threading.Thread(target=self.run, daemon=True) for _ in range(workers)]

    def __enter__(self) -> Traffic:
        for t in self.threads:
            t.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        for t in self.threads:
            t.join(15)

    def run(self) -> None:
        conn = http.client.HTTPConnection(self.host, self.port, timeout=15)
        while not self.stop.is_set():
            try:
                conn.request("GET", "/")
                resp = conn.getresponse()
                body = resp.read()
                outcome = json.loads(body)["catalog"] if resp.status == 200 else \
                    f"{resp.status} {resp.getheader('x-meshlet-error')} {body[:100]!r}"
                ok = resp.status == 200
            except (OSError, http.client.HTTPException, ValueError) as exc:
                conn.close()
                conn = http.client.HTTPConnection(self.host, self.port, timeout=15)
                ok, outcome = False, repr(exc)
            with self.lock:
                if ok:
                    self.ok += 1
                    self.catalogs[outcome] = self.catalogs.get(outcome, 0) + 1
                else:
                    self.failed.append(outcome)
        conn.close()

    def total(self) -> int:
        with self.lock:
            return self.ok + len(self.failed)


class HealthHistory:
    """Records every status an instance goes through, via blocking queries on the API."""

    def __init__(self, addr: str, service: str) -> None:
        self.url = f"{addr}/v1/services/{service}/instances"
        self.history: list[tuple[str, str, int]] = []
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self.run, daemon=True)

    def __enter__(self) -> HealthHistory:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join(10)

    def run(self) -> None:
        import urllib.request
        index = 0
        while not self.stop.is_set():
            with urllib.request.urlopen(f"{self.url}?index={index}&wait=1s", timeout=10) as r:
                index = int(r.headers["X-Meshlet-Index"])
                for inst in json.load(r):
                    entry = (inst["id"], inst["status"], inst["restarts"])
                    if entry not in self.history:
                        self.history.append(entry)

    def of(self, instance: str) -> list[tuple[str, int]]:
        return [(status, restarts) for i, status, restarts in list(self.history)
                if i == instance]

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

from meshlet.agent.app_ports import free_app_port
from tests.conftest import wait_until as wait_for

__all__ = ["wait_for"]

REPO = Path(__file__).resolve().parents[2]
# Every server a test starts shares this cluster secret (`meshlet keygen` makes real ones).
JOIN_TOKEN = "test-join-token-0123456789abcdef"
SHOP = REPO / "examples" / "shop" / "meshlet.yaml"


class UnixHTTPConnection(http.client.HTTPConnection):
    """HTTP over the Unix socket at ``path`` (a sidecar's admin API)."""

    def __init__(self, path: str, timeout: float = 5.0) -> None:
        super().__init__("sidecar", timeout=timeout)
        self.path = path

    def connect(self) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(self.timeout)
        self.sock.connect(self.path)


def admin_get(admin: str, path: str) -> Any:
    """GET ``path`` from the admin API at ``admin`` (``unix:PATH``, as in an instance's
    ``meta.admin``): the JSON body."""
    assert admin.startswith("unix:"), admin
    conn = UnixHTTPConnection(admin[5:])
    try:
        conn.request("GET", path)
        resp = conn.getresponse()
        body = resp.read()
        assert resp.status in (200, 503), (resp.status, body)
        return json.loads(body)
    finally:
        conn.close()


def free_port() -> int:
    """A free port for a process a test starts, outside the kernel's ephemeral range
    as the agent picks its apps' (``agent/app_ports.py``): one from ``bind(0)`` could
    go to another process's ``bind(0)`` or ``connect()`` before this one binds it."""
    return free_app_port("127.0.0.1")


def free_ports(n: int) -> list[int]:
    """``n`` distinct free ports."""
    ports: list[int] = []
    while len(ports) < n:
        port = free_port()
        if port not in ports:
            ports.append(port)
    return ports


def stop_processes(procs: dict[str, subprocess.Popen[bytes]], kill: bool = False) -> None:
    """Stop every process still running (SIGTERM, or SIGKILL with ``kill``)."""
    for proc in procs.values():
        if proc.poll() is None:
            proc.kill() if kill else proc.terminate()
            proc.wait(10)


def env_for(home: Path) -> dict[str, str]:
    """The environment of a meshlet command: ``home`` as MESHLET_HOME, the tests' join
    token, and as MESHLET_TOKEN the management token of a server whose data directory
    is right under ``home`` (``meshlet up`` keeps its own deeper: the CLI finds that
    one itself)."""
    env = dict(os.environ)
    env["MESHLET_HOME"] = str(home)
    env["MESHLET_JOIN_TOKEN"] = JOIN_TOKEN
    env.pop("MESHLET_ADDR", None)
    env.pop("MESHLET_TOKEN", None)
    for path in sorted(home.glob("*/management.token")):
        env["MESHLET_TOKEN"] = path.read_text().strip()
    return env


def up_token(home: Path) -> str:
    """The management token of the `meshlet up` whose MESHLET_HOME is ``home``, found
    where the CLI finds it (``up-token.json`` says which file)."""
    record = json.loads((home / "up-token.json").read_text())
    return Path(record["token_file"]).read_text().strip()


def token_header(home: Path) -> dict[str, str]:
    """The header that carries the token ``env_for(home)`` finds, for raw HTTP calls."""
    token = env_for(home).get("MESHLET_TOKEN")
    return {"X-Meshlet-Token": token} if token else {}


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


@contextlib.contextmanager
def lone_server(home: Path) -> Iterator[str]:
    """A `meshlet server` process of its own, its data under ``home``; yields its API."""
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "meshlet", "server", "--data-dir",
                             str(home / "data"), "--http", f"127.0.0.1:{port}"],
                            env=env_for(home), stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    addr = f"http://127.0.0.1:{port}"
    try:
        wait_for(lambda: meshlet("--addr", addr, "status", home=home,
                                 check=False).returncode == 0, 20, "the server")
        yield addr
    finally:
        proc.terminate()
        proc.wait(10)


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

    def __init__(self, addr: str, service: str, token: str) -> None:
        self.url = f"{addr}/v1/services/{service}/instances"
        self.headers = {"X-Meshlet-Token": token}
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
            req = urllib.request.Request(f"{self.url}?index={index}&wait=1s",
                                         headers=self.headers)
            with urllib.request.urlopen(req, timeout=10) as r:
                index = int(r.headers["X-Meshlet-Index"])
                for inst in json.load(r):
                    entry = (inst["id"], inst["status"], inst["restarts"])
                    if entry not in self.history:
                        self.history.append(entry)

    def of(self, instance: str) -> list[tuple[str, int]]:
        return [(status, restarts) for i, status, restarts in list(self.history)
                if i == instance]

"""A sidecar process loads only the data plane, and its command line behaves.

Started as the agent starts it (``python -m meshlet proxy --bootstrap ... --admin
unix:... --port-file ...``), with ``-X importtime`` so that the process itself lists
every module it ever imported, including those imported later by traffic or by the
admin API; its memory map is read while it runs, for the extension modules.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import stat
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import wait_until

# Packages of the control plane, and libraries only it needs: never in a sidecar.
FORBIDDEN = ("aiohttp", "pydantic", "pydantic_core", "yaml", "click", "pyroute2", "rich",
             "prometheus_client",  # its package loads http.server, urllib, wsgiref: 5 MB
             "cryptography", "dnspython", "dns", "meshlet.api", "meshlet.state",
             "meshlet.raft", "meshlet.server", "meshlet.agent", "meshlet.cli",
             "meshlet.net", "meshlet.deploy", "meshlet.devmode")


def forbidden(modules: set[str]) -> list[str]:
    return sorted(m for m in modules if any(m == f or m.startswith(f + ".") for f in FORBIDDEN))


class Backend(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:
        body = b"hello from %d\n" % self.server.server_address[1]
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@contextlib.contextmanager
def running_backend() -> Iterator[int]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), Backend)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield int(server.server_address[1])
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture
def backend() -> Iterator[int]:
    with running_backend() as port:
        yield port


@pytest.fixture
def other_backend() -> Iterator[int]:
    with running_backend() as port:
        yield port


def bootstrap(tmp_path: Path, backend: int) -> Path:
    path = tmp_path / "bootstrap.json"
    path.write_text(json.dumps({
        "version": 1, "service": "caller", "instance": "caller-1",
        "listeners": [{"name": "web", "direction": "outbound", "host": "127.0.0.1",
                       "port": 0}],
        "clusters": {"outbound:web": {"name": "web", "settings": {"lb": "peak_ewma"},
                                      "endpoints": [{"id": "w1", "address": "127.0.0.1",
                                                     "port": backend}]}}}))
    return path


def http(sock: socket.socket, request: bytes) -> bytes:
    sock.sendall(request)
    reply = b""
    while b"\r\n\r\n" not in reply:
        reply += sock.recv(65536)
    head, _, body = reply.partition(b"\r\n\r\n")
    length = int(head.lower().split(b"content-length: ")[1].split(b"\r\n")[0])
    while len(body) < length:
        body += sock.recv(65536)
    return head + b"\r\n\r\n" + body


def admin(path: Path, request: bytes) -> bytes:
    with socket.socket(socket.AF_UNIX) as sock:
        sock.connect(str(path))
        return http(sock, request)


def test_a_running_sidecar_has_no_control_plane_module(tmp_path: Path, backend: int) -> None:
    sock_path, port_file = tmp_path / "admin.sock", tmp_path / "sidecar.ports"
    argv = [sys.executable, "-X", "importtime", "-m", "meshlet", "proxy",
            "--bootstrap", str(bootstrap(tmp_path, backend)), "--admin", f"unix:{sock_path}",
            "--port-file", str(port_file)]
    proc = subprocess.Popen(argv, stderr=subprocess.PIPE, text=True)
    try:
        wait_until(lambda: port_file.exists() or proc.poll() is not None, 30,
                   "the sidecar's port file")
        assert proc.poll() is None, "the sidecar exited"
        port = json.loads(port_file.read_text())["listeners"]["outbound:web"]
        with socket.create_connection(("127.0.0.1", port)) as sock:
            for _ in range(3):
                assert http(sock, b"GET / HTTP/1.1\r\nHost: web\r\n\r\n").startswith(
                    b"HTTP/1.1 200")
        for request in (b"GET /ready", b"GET /config", b"GET /metrics", b"GET /nothing",
                        b"POST /drain?direction=outbound"):
            assert admin(sock_path, request + b" HTTP/1.1\r\nHost: sidecar\r\n\r\n")
        body = json.dumps({**json.loads(bootstrap(tmp_path, backend).read_text()),
                           "version": 2}).encode()
        assert b" 200 " in admin(sock_path, b"PUT /config HTTP/1.1\r\nHost: sidecar\r\n"
                                 b"Content-Length: %d\r\n\r\n%b" % (len(body), body))
        maps = Path(f"/proc/{proc.pid}/maps").read_text()
        libraries = {line.split()[-1] for line in maps.splitlines() if ".so" in line}
        assert [lib for lib in libraries
                if any(f"/{name}/" in lib for name in FORBIDDEN)] == []
    finally:
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err[-2000:]
    imported = {line.rsplit("|", 1)[1].strip() for line in err.splitlines()
                if line.startswith("import time:") and "|" in line}
    assert "meshlet.proxy.sidecar" in imported and "meshlet.proxy.admin_http" in imported
    assert forbidden(imported) == []
    assert not sock_path.exists()


def test_importing_the_entry_point_loads_no_control_plane_module() -> None:
    code = ("import sys, meshlet.proxy.main, meshlet.proxy.admin, meshlet.proxy.sidecar; "
            "print('\\n'.join(sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout
    assert forbidden(set(out.split())) == []


def run(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "meshlet", "proxy", *args],
                          check=False, capture_output=True, text=True, timeout=60,
                          env={**os.environ, **(env or {})})


def last_line(text: str) -> str:
    """The error line (a stale compiled build adds a warning before it)."""
    return text.strip().splitlines()[-1]


def test_command_line(tmp_path: Path) -> None:
    result = run("--help")
    assert result.returncode == 0
    for option in ("--bootstrap", "--admin", "--admin-token-file", "--metrics",
                   "--port-file", "--grace"):
        assert option in result.stdout
    result = run()
    assert result.returncode == 2 and "--bootstrap" in result.stderr
    result = run("--bootstrap", str(tmp_path / "missing.json"))
    assert result.returncode == 2 and "does not exist" in result.stderr
    broken = tmp_path / "broken.json"
    broken.write_text("{")
    result = run("--bootstrap", str(broken))
    assert result.returncode == 1
    assert last_line(result.stderr).startswith("meshlet: error: cannot read sidecar bootstrap")
    assert "Traceback" not in result.stderr
    good = bootstrap(tmp_path, 9)
    result = run("--bootstrap", str(good), "--admin", "nowhere")
    assert result.returncode == 1
    assert last_line(result.stderr) == "meshlet: error: --admin: 'nowhere' is not HOST:PORT"
    result = run("--bootstrap", str(good), "--admin", f"unix:{tmp_path}/no/such/dir/a.sock")
    assert result.returncode == 1 and "cannot listen on unix:" in result.stderr
    assert "Traceback" not in result.stderr


@contextlib.contextmanager
def sidecar(tmp_path: Path, backend: int, *args: str) -> Iterator[
        tuple[subprocess.Popen[str], dict[str, Any]]]:
    """A sidecar process and its port file; stopped with SIGTERM (exit status 0)."""
    port_file = tmp_path / "sidecar.ports"
    proc = subprocess.Popen([sys.executable, "-m", "meshlet", "proxy", "--bootstrap",
                             str(bootstrap(tmp_path, backend)), "--port-file", str(port_file),
                             *args], stderr=subprocess.PIPE, text=True)
    try:
        wait_until(lambda: port_file.exists() or proc.poll() is not None, 30,
                   "the sidecar's port file")
        assert proc.poll() is None, "the sidecar exited"
        yield proc, json.loads(port_file.read_text())
    finally:
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err[-2000:]


def tcp_http(port: int, request: bytes) -> tuple[int, bytes]:
    with socket.create_connection(("127.0.0.1", port)) as sock:
        reply = http(sock, request)
    head, _, body = reply.partition(b"\r\n\r\n")
    return int(head.split(b" ")[1]), body


def put(path: str, body: object, token: str | None = None) -> bytes:
    raw = json.dumps(body).encode()
    auth = b"Authorization: Bearer %b\r\n" % token.encode() if token else b""
    return b"%b %b HTTP/1.1\r\nHost: sidecar\r\n%bContent-Length: %d\r\n\r\n%b" % (
        b"PUT", path.encode(), auth, len(raw), raw)


def test_a_tcp_admin_needs_the_token_it_writes_to_a_private_file(tmp_path: Path,
                                                                backend: int) -> None:
    with sidecar(tmp_path, backend, "--admin", "127.0.0.1:0",
                 "--metrics", "127.0.0.1:0") as (proc, ports):
        token_file = Path(ports["token_file"])
        assert token_file == tmp_path / "admin.token"  # beside the bootstrap file
        assert stat.S_IMODE(token_file.stat().st_mode) == 0o600
        token = token_file.read_text().strip()
        assert len(token) >= 40
        assert token not in Path(f"/proc/{proc.pid}/cmdline").read_text()
        admin = int(ports["admin"])
        status, _ = tcp_http(admin, b"GET /config HTTP/1.1\r\nHost: x\r\n\r\n")
        assert status == 401
        newer = {**json.loads(bootstrap(tmp_path, backend).read_text()), "version": 9}
        assert tcp_http(admin, put("/config", newer, "not-it"))[0] == 403
        assert tcp_http(admin, put("/config", newer))[0] == 401
        status, body = tcp_http(admin, b"GET /ready HTTP/1.1\r\nHost: x\r\n"
                                       b"Authorization: Bearer %b\r\n\r\n" % token.encode())
        assert status == 200 and json.loads(body)["version"] == 1  # nothing applied
        status, body = tcp_http(admin, put("/config", newer, token))
        assert (status, json.loads(body)) == (200, {"applied": True, "version": 9})
        # Prometheus scrapes the read-only listener, without a token.
        metrics = int(ports["metrics"])
        status, body = tcp_http(metrics, b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
        assert status == 200 and b"meshlet_proxy_config_version 9.0" in body
        assert tcp_http(metrics, put("/config", {**newer, "version": 10}))[0] == 404
        assert tcp_http(metrics, b"POST /drain HTTP/1.1\r\nHost: x\r\n"
                                 b"Content-Length: 0\r\n\r\n")[0] == 404
    assert not token_file.exists()  # removed at exit


def test_the_admin_is_a_unix_socket_by_default(tmp_path: Path, backend: int) -> None:
    with sidecar(tmp_path, backend) as (_, ports):
        assert ports["admin"] == f"unix:{tmp_path / 'admin.sock'}"
        assert ports["token_file"] is None and ports["metrics"] is None
        mode = (tmp_path / "admin.sock").stat().st_mode
        assert stat.S_ISSOCK(mode) and stat.S_IMODE(mode) == 0o600
        assert b" 200 " in admin(tmp_path / "admin.sock",
                                 b"GET /ready HTTP/1.1\r\nHost: sidecar\r\n\r\n")
    assert not (tmp_path / "admin.sock").exists()


def traffic(port: int) -> bytes:
    with socket.create_connection(("127.0.0.1", port)) as sock:
        reply = http(sock, b"GET / HTTP/1.1\r\nHost: web\r\n\r\n")
    assert reply.startswith(b"HTTP/1.1 200"), reply[:200]
    return reply.partition(b"\r\n\r\n")[2]


def test_a_refused_snapshot_changes_nothing(tmp_path: Path, backend: int,
                                            other_backend: int) -> None:
    """A push that moves the upstream to another backend but holds one bad endpoint
    elsewhere is refused whole: the config reads the same and traffic still goes to
    the old backend; a version too high to be real is refused and pins nothing."""
    sock_path = tmp_path / "admin.sock"
    with sidecar(tmp_path, backend) as (_, ports):
        outbound = ports["listeners"]["outbound:web"]
        assert traffic(outbound) == b"hello from %d\n" % backend
        config = b"GET /config HTTP/1.1\r\nHost: sidecar\r\n\r\n"
        before = admin(sock_path, config)
        moved = json.loads(bootstrap(tmp_path, other_backend).read_text())
        bad = {**moved, "version": 2, "clusters": {
            **moved["clusters"],
            "outbound:db": {"name": "db", "endpoints": [
                {"id": "d1", "address": "127.0.0.1", "port": 5432, "weight": "heavy"}]}}}
        reply = admin(sock_path, put("/config", bad))
        assert reply.startswith(b"HTTP/1.1 400 ") and b'"field": "endpoints"' in reply
        pinning = admin(sock_path, put("/config", {**moved, "version": 2**63}))
        assert pinning.startswith(b"HTTP/1.1 400 ") and b'"field": "version"' in pinning
        assert admin(sock_path, config) == before
        assert traffic(outbound) == b"hello from %d\n" % backend
        assert b'"applied": true' in admin(sock_path, put("/config", {**moved, "version": 2}))
        assert traffic(outbound) == b"hello from %d\n" % other_backend


def test_an_admin_socket_in_a_shared_directory_is_refused(tmp_path: Path) -> None:
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o1777)
    result = run("--bootstrap", str(bootstrap(tmp_path, 9)), "--admin",
                 f"unix:{shared}/admin.sock")
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert "writable by others" in last_line(result.stderr)
    assert not (shared / "admin.sock").exists()

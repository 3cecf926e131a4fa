"""``GET /v1/signals`` on a real server scraping real sidecars that carry real traffic:
a caller's sidecar sends to an echo sidecar in front of an app, some answers are 5xx.
A token sees only what it may read; a hostile instance's metrics URL is never fetched."""

from __future__ import annotations

import contextlib
import json
import signal
import subprocess
import sys
import threading
import urllib.request
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from meshlet.api.client import Client
from meshlet.errors import Unauthenticated
from meshlet.server.main import Server
from tests.conftest import async_wait_until, wait_until


class App(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:
        status = 500 if self.path == "/fail" else 200
        self.send_response(status)
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"ok")

    def log_message(self, *args: object) -> None:
        pass


class Hostile(App):
    """Where a hostile instance's meta.metrics points: it must never be asked."""

    hits = 0

    def do_GET(self) -> None:
        Hostile.hits += 1
        super().do_GET()


@contextlib.contextmanager
def serving(handler: type[BaseHTTPRequestHandler]) -> Iterator[int]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield int(server.server_address[1])
    finally:
        server.shutdown()
        server.server_close()


@contextlib.contextmanager
def sidecar(tmp: Path, service: str, instance: str, listeners: list[dict[str, Any]],
            clusters: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """A real `meshlet proxy`, as the agent starts it; yields its port file."""
    boot, ports = tmp / f"{instance}.json", tmp / f"{instance}.ports"
    boot.write_text(json.dumps({"version": 1, "service": service, "instance": instance,
                                "listeners": listeners, "clusters": clusters}))
    proc = subprocess.Popen([sys.executable, "-m", "meshlet", "proxy", "--bootstrap",
                             str(boot), "--admin", f"unix:{tmp / instance}.sock",
                             "--metrics", "127.0.0.1:0", "--port-file", str(ports)],
                            stderr=subprocess.DEVNULL)
    try:
        wait_until(lambda: ports.exists() or proc.poll() is not None, 30, "port file")
        assert proc.poll() is None
        yield json.loads(ports.read_text())
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(30)


@pytest.fixture
def mesh(tmp_path: Path) -> Iterator[tuple[dict[str, Any], dict[str, Any]]]:
    with serving(App) as app, sidecar(
            tmp_path, "echo", "echo-1",
            [{"name": "echo", "direction": "inbound", "host": "127.0.0.1", "port": 0}],
            {"inbound:echo": {"name": "echo", "endpoints": [
                {"id": "echo-1", "address": "127.0.0.1", "port": app}]}}) as echo:
        inbound = echo["listeners"]["inbound:echo"]
        with sidecar(tmp_path, "caller", "caller-1",
                     [{"name": "echo", "direction": "outbound", "host": "127.0.0.1",
                       "port": 0}],
                     {"outbound:echo": {"name": "echo", "settings": {"retries": 0},
                                        "endpoints": [{"id": "echo-1", "address": "127.0.0.1",
                                                       "port": inbound}]}}) as caller:
            yield echo, caller


def send(port: int, ok: int, failed: int) -> None:
    for path in ["/"] * ok + ["/fail"] * failed:
        with contextlib.suppress(urllib.error.HTTPError):
            urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=10).read()


async def test_signals_of_real_traffic_filtered_by_acl(
        server: Server, mesh: tuple[dict[str, Any], dict[str, Any]]) -> None:
    echo, caller = mesh
    with serving(Hostile) as hostile:
        async with Client(server.url, token=server.acl.token()) as admin:
            for id_, service, ports in (("echo-1", "echo", echo), ("caller-1", "caller", caller)):
                await admin.register(id=id_, service=service, address="127.0.0.1", port=1,
                                     meta={"metrics": f"http://127.0.0.1:{ports['metrics']}"})
            # Its metrics URL names another host than its address: not fetched.
            await admin.register(id="evil-1", service="evil", address="10.0.0.1", port=1,
                                 meta={"metrics": f"http://127.0.0.1:{hostile}"})
            await admin.register(id="evil-2", service="evil", address="127.0.0.1", port=1,
                                 meta={"metrics": f"https://127.0.0.1:{hostile}"})
            first = await admin.signals()
            assert first["window"] is None or isinstance(first["window"], float)
            outbound = caller["listeners"]["outbound:echo"]

            async def measured() -> dict[str, Any] | None:
                # Traffic between polls until a window holds it.
                send(outbound, 9, 1)
                body = await admin.signals()
                by = {s["service"]: s for s in body["services"]}
                edges = {(e["source"], e["destination"]): e for e in body["edges"]}
                edge = edges.get(("caller", "echo"))
                if by["echo"]["rps"] and edge and edge["rps"] and \
                        by["echo"]["error_rate"] and by["echo"]["p99"] is not None:
                    return body
                return None
            body = await async_wait_until(measured, 60, "a window with the traffic",
                                          interval=0.5)
            await admin.policy_create("echo-only", [
                {"kind": "service", "prefix": "echo", "access": "read"}])
            made = await admin.token_create(["echo-only"])
        by = {s["service"]: s for s in body["services"]}
        assert set(by) == {"caller", "echo", "evil"}
        assert by["echo"]["instances"] == 1 and by["echo"]["scraped"] == 1
        assert 0 < by["echo"]["error_rate"] < 1
        assert by["echo"]["p50"] <= by["echo"]["p99"]
        assert by["evil"]["scraped"] == 0 and by["evil"]["rps"] is None
        assert body["unreachable"] == ["evil-1", "evil-2"]
        assert body["window"] > 0 and body["time"] > 1e9
        assert Hostile.hits == 0
        async with Client(server.url, token=made["secret"]) as reader:
            limited = await reader.signals()
        assert [s["service"] for s in limited["services"]] == ["echo"]
        assert limited["edges"] == [] and limited["unreachable"] == []
        async with Client(server.url) as anonymous:
            with pytest.raises(Unauthenticated):
                await anonymous.signals()

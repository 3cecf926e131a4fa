"""Shared bits of the shop example: a keep-alive JSON HTTP server and an upstream client.

Each service listens on $HOST:$PORT and finds an upstream through the sidecar's outbound
listener in $MESHLET_UPSTREAM_<NAME> (host:port on loopback), as meshlet sets them.
"""

from __future__ import annotations

import http.client
import json
import os
import signal
import sys
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

INSTANCE = os.environ.get("MESHLET_INSTANCE", "local")
Route = Callable[[dict[str, str]], tuple[int, Any]]


class Upstream:
    """Calls one upstream service over a kept-alive connection per thread."""

    def __init__(self, name: str) -> None:
        host, _, port = os.environ[f"MESHLET_UPSTREAM_{name.upper()}"].rpartition(":")
        self.host, self.port = host, int(port)
        self.local = threading.local()

    def get_json(self, path: str) -> Any:
        for attempt in range(2):
            conn = getattr(self.local, "conn", None)
            if conn is None:
                conn = self.local.conn = http.client.HTTPConnection(self.host, self.port,
                                                                    timeout=10)
            try:
                conn.request("GET", path)
                resp = conn.getresponse()
                body = resp.read()
            except (OSError, http.client.HTTPException):
                conn.close()
                self.local.conn = None
                if attempt:
                    raise
                continue
            if resp.status != 200:
                raise RuntimeError(f"GET {path}: {resp.status} {body[:80]!r}")
            return json.loads(body)
        raise AssertionError("unreachable")


def serve(routes: dict[str, Route]) -> None:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        disable_nagle_algorithm = True  # head and body go in separate writes

        def do_GET(self) -> None:
            path, _, query = self.path.partition("?")
            params = dict(p.partition("=")[::2] for p in query.split("&") if p)
            route = routes.get(path)
            try:
                status, body = (404, {"error": "no route"}) if route is None else route(params)
            except Exception as exc:
                status, body = 502, {"error": f"{type(exc).__name__}: {exc}"}
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer((os.environ.get("HOST", "127.0.0.1"),
                                  int(os.environ["PORT"])), Handler)
    server.daemon_threads = True
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    print(f"{INSTANCE} listening on {server.server_address}", flush=True)
    try:
        server.serve_forever()
    finally:
        server.server_close()

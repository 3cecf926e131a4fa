"""A test app: answers with its instance id; /control sets its delay and status."""

from __future__ import annotations

import json
import os
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

STATE = {"delay": 0.0, "status": 200}
INSTANCE = os.environ.get("MESHLET_INSTANCE", "echo")


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True

    def do_GET(self) -> None:
        path, _, query = self.path.partition("?")
        if path == "/control":
            for pair in query.split("&"):
                key, _, value = pair.partition("=")
                if key in STATE:
                    STATE[key] = float(value) if key == "delay" else int(value)
            status = 200
        elif path == "/health":
            status = 200
        else:
            if STATE["delay"]:
                time.sleep(STATE["delay"])
            status = STATE["status"]
        body = json.dumps({"instance": INSTANCE, **STATE}).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass


server = ThreadingHTTPServer(("127.0.0.1", int(os.environ["PORT"])), Handler)
server.daemon_threads = True
server.serve_forever()

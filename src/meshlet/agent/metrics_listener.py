"""The agent's read-only metrics listener (``meshlet agent --metrics-addr HOST:PORT``).

It serves ``GET /metrics`` (Prometheus text) and nothing else: any other path is 404,
any other method on ``/metrics`` 405 with ``Allow: GET``. Nothing on it changes state,
so it needs no token. It runs on the sidecar's small HTTP server (``proxy/admin_http``),
which bounds each request's head, body and time; here, with tighter numbers (a scrape
is a bodiless GET), and at most ``MAX_CONNECTIONS`` at once: a connection past them is
closed as it arrives.

``address_to_register`` says what the agent registers with its node: the bound host,
or, for a wildcard bind, the address other hosts reach the node on.
"""

from __future__ import annotations

import asyncio
from typing import Final

from prometheus_client import CollectorRegistry, generate_latest

from meshlet.observe.exposition import CONTENT_TYPE
from meshlet.proxy.admin_http import (
    AdminConnection,
    AdminServer,
    Handler,
    Limits,
    Request,
    Response,
    error_response,
)

MAX_CONNECTIONS: Final = 64
LIMITS: Final = Limits(max_body=1024, max_url=2048, max_head=16 * 1024, max_headers=64,
                       request_timeout=10.0, idle_timeout=60.0)
WILDCARDS: Final = ("", "0.0.0.0")


def metrics_handler(registry: CollectorRegistry) -> Handler:
    """The listener's one route; never raises."""

    def handle(request: Request) -> Response:
        if request.path != "/metrics":
            return error_response(404, "not_found", f"{request.method} {request.path}: "
                                  "Not Found (this listener serves GET /metrics only)")
        if request.method != "GET":
            return error_response(405, "method_not_allowed",
                                  f"{request.method} /metrics: Method Not Allowed",
                                  headers=(("Allow", "GET"),))
        return Response(200, generate_latest(registry), CONTENT_TYPE)
    return handle


class _BoundedConnection(AdminConnection):
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        if len(self.server.connections) >= MAX_CONNECTIONS:
            self.closed = True
            transport.close()
            return
        super().connection_made(transport)


class MetricsListener(AdminServer):
    """Listens on ``host:port``; ``address`` is the bound port once started."""

    def __init__(self, registry: CollectorRegistry) -> None:
        super().__init__(metrics_handler(registry), LIMITS)
        self.host = ""

    def __repr__(self) -> str:
        return f"<MetricsListener {self.host}:{self.address} " \
               f"connections={len(self.connections)}>"

    def protocol(self) -> AdminConnection:
        return _BoundedConnection(self.handle, self.limits, self)

    async def start(self, host: str, port: int = 0) -> None:
        """Raises OSError naming the address (taken, not this host's)."""
        self.host = host
        try:
            self.server = await asyncio.get_running_loop().create_server(
                self.protocol, host, port, reuse_address=True)
        except OSError as exc:
            raise OSError(exc.errno, f"cannot serve metrics on {host}:{port}: "
                                     f"{exc.strerror or exc}") from None
        self.address = int(self.server.sockets[0].getsockname()[1])

    def address_to_register(self, node_address: str) -> str:
        """``HOST:PORT`` a scraper reaches this listener on."""
        host = node_address if self.host in WILDCARDS else self.host
        return f"{host}:{self.address}"

"""The sidecar's admin API: readiness, config (read and push), metrics, drain.

``handle`` serves all of it (to the agent, on the private admin socket); ``handle_public``
only ``GET /metrics`` and ``GET /ready``, for the read-only ``--metrics`` listener that
Prometheus scrapes.

Routes over ``admin_http``'s requests. Every failure is an answer, never an exception:
a ``MeshletError`` becomes its status with ``{"error": {"code", "message", "field"}}``,
an unknown path 404, a known path with another method 405 (with ``Allow``), and a bug
500 with the traceback in the log only.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from meshlet import compiled
from meshlet.errors import ConfigError, MeshletError
from meshlet.json_limits import MAX_SNAPSHOT_BYTES, loads
from meshlet.observe.exposition import CONTENT_TYPE, render
from meshlet.proxy.admin_http import Request, Response, error_response, json_response
from meshlet.proxy.config import Snapshot
from meshlet.proxy.sidecar import Sidecar

log = logging.getLogger(__name__)
Route = Callable[[Request], Response]


class AdminApi:
    """``handle(request)`` answers one admin request for ``sidecar``."""

    def __init__(self, sidecar: Sidecar) -> None:
        self.sidecar = sidecar
        self.routes: dict[str, dict[str, Route]] = {
            "/ready": {"GET": self.ready},
            "/config": {"GET": self.get_config, "PUT": self.put_config},
            "/metrics": {"GET": self.metrics},
            "/drain": {"POST": self.drain},
        }
        self.public_routes: dict[str, dict[str, Route]] = {
            "/ready": {"GET": self.ready}, "/metrics": {"GET": self.metrics}}

    def __repr__(self) -> str:
        return f"<AdminApi {self.sidecar!r}>"

    def handle(self, request: Request) -> Response:
        return self.dispatch(self.routes, request)

    def handle_public(self, request: Request) -> Response:
        return self.dispatch(self.public_routes, request)

    def dispatch(self, routes: dict[str, dict[str, Route]], request: Request) -> Response:
        methods = routes.get(request.path)
        if methods is None:
            return error_response(404, "not_found",
                                  f"{request.method} {request.path}: Not Found")
        route = methods.get("GET" if request.method == "HEAD" else request.method)
        if route is None:
            allow = ", ".join(sorted({*methods, *(["HEAD"] if "GET" in methods else [])}))
            return error_response(405, "method_not_allowed",
                                  f"{request.method} {request.path}: Method Not Allowed",
                                  headers=(("Allow", allow),))
        try:
            return route(request)
        except MeshletError as exc:
            return json_response({"error": exc.to_dict()}, exc.http_status)
        except Exception:
            log.exception("unhandled error in %s %s", request.method, request.path)
            return error_response(500, "internal", "internal server error")

    # -- routes -----------------------------------------------------------------------

    def ready(self, request: Request) -> Response:
        sidecar = self.sidecar
        draining = any(s.draining for s in sidecar.listeners)
        ok = sidecar.snapshot.version > 0 and not draining
        return json_response(
            {"ready": ok, "version": sidecar.snapshot.version, "draining": draining,
             "active_requests": sidecar.active_requests, "ports": sidecar.ports()},
            200 if ok else 503)

    def get_config(self, request: Request) -> Response:
        body = self.sidecar.snapshot.to_dict()
        body["ports"] = self.sidecar.ports()
        body["relay"] = {"build": compiled.BUILD, "why": compiled.BUILD_REASON}
        return json_response(body)

    def put_config(self, request: Request) -> Response:
        snapshot = Snapshot.from_dict(loads(request.body, max_bytes=MAX_SNAPSHOT_BYTES))
        applied = self.sidecar.apply(snapshot)
        return json_response({"applied": applied, "version": self.sidecar.snapshot.version})

    def metrics(self, request: Request) -> Response:
        return Response(200, render(self.sidecar.metrics.registry), CONTENT_TYPE)

    def drain(self, request: Request) -> Response:
        direction = request.query.get("direction")
        if direction not in (None, "inbound", "outbound"):
            raise ConfigError("direction: expected inbound or outbound", "direction")
        self.sidecar.drain(direction)
        return json_response({"active_requests": self.sidecar.active_requests})


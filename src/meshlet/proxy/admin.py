"""The sidecar's admin API: readiness, config (read and push), metrics, drain."""

from __future__ import annotations

import json

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from meshlet import proxy
from meshlet.api.routes import errors_middleware, read_json
from meshlet.errors import ConfigError
from meshlet.proxy.config import Snapshot
from meshlet.proxy.sidecar import Sidecar


def admin_app(sidecar: Sidecar) -> web.Application:
    async def ready(request: web.Request) -> web.Response:
        draining = any(s.draining for s in sidecar.listeners)
        ok = sidecar.snapshot.version > 0 and not draining
        return web.json_response(
            {"ready": ok, "version": sidecar.snapshot.version, "draining": draining,
             "active_requests": sidecar.active_requests, "ports": sidecar.ports()},
            status=200 if ok else 503)

    async def get_config(request: web.Request) -> web.Response:
        body = sidecar.snapshot.to_dict()
        body["ports"] = sidecar.ports()
        body["relay"] = {"build": proxy.BUILD, "why": proxy.BUILD_REASON}
        return web.json_response(body)

    async def put_config(request: web.Request) -> web.Response:
        snapshot = Snapshot.from_dict(await read_json(request))
        applied = sidecar.apply(snapshot)
        return web.json_response({"applied": applied, "version": sidecar.snapshot.version})

    async def metrics(request: web.Request) -> web.Response:
        return web.Response(body=generate_latest(sidecar.metrics.registry),
                            headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def drain(request: web.Request) -> web.Response:
        direction = request.query.get("direction")
        if direction not in (None, "inbound", "outbound"):
            raise ConfigError("direction: expected inbound or outbound", "direction")
        sidecar.drain(direction)
        return web.json_response({"active_requests": sidecar.active_requests})

    app = web.Application(middlewares=[errors_middleware], client_max_size=8 * 1024 * 1024)
    app.router.add_get("/ready", ready)
    app.router.add_get("/config", get_config)
    app.router.add_put("/config", put_config)
    app.router.add_get("/metrics", metrics)
    app.router.add_post("/drain", drain)
    return app


def dumps(value: object) -> str:
    return json.dumps(value, indent=2, sort_keys=True)

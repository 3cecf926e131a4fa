"""HTTP handlers for the server. Thin: parse, propose or query, render.

Every failure leaves as ``{"error": {"code", "message", "field"}}`` with a 4xx status
(5xx only for a server fault), never a traceback. List endpoints are blocking queries:
``?index=N&wait=30s`` returns once the watched index exceeds N, or after ``wait``, and
every success carries ``X-Meshlet-Index`` (the client refuses one without it).
"""

from __future__ import annotations

import json
import logging
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import aiohttp
from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

import meshlet
from meshlet.addresses import parse_hostport, to_url
from meshlet.api import openapi
from meshlet.api.access import CREDENTIAL_HEADERS, Guard, Need, require, visible
from meshlet.api.acl import AclRoutes
from meshlet.api.ca import CaRoutes
from meshlet.api.client import client_tls, session_without_retries
from meshlet.api.containers import ContainerRoutes
from meshlet.api.control_plane import ControlPlane, Heartbeats
from meshlet.api.error_body import error_body, http_error_body
from meshlet.api.intentions import IntentionRoutes
from meshlet.api.networks import NetworkRoutes
from meshlet.api.nodes import NodeRoutes
from meshlet.api.objects import ObjectRoutes
from meshlet.api.pods import PodRoutes
from meshlet.api.schemas import HealthBody, PeerBody, RegisterBody, parse_body, read_json
from meshlet.api.signals import SignalRoutes
from meshlet.api.ui import UiRoutes
from meshlet.api.vips import VipRoutes
from meshlet.durations import parse_duration
from meshlet.errors import ConfigError, MeshletError, NotFound, NotLeader, Unavailable
from meshlet.observe.server_metrics import ServerMetrics
from meshlet.state.commands import (
    ConfigDelete,
    ConfigSet,
    DeregisterInstance,
    KVDelete,
    KVPut,
    RegisterInstance,
    SetHealth,
)
from meshlet.state.config_entry import effective
from meshlet.state.machine import config_to_dict, kv_to_dict

log = logging.getLogger(__name__)
INDEX_HEADER = "X-Meshlet-Index"
FORWARDED_HEADER = "X-Meshlet-Forwarded"
MAX_WAIT = 600.0
DEFAULT_WAIT = 300.0

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def error_response(exc: BaseException) -> web.Response:
    status, body = error_body(exc)
    return web.json_response(body, status=status)


@web.middleware
async def errors_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except MeshletError as exc:
        return error_response(exc)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        return web.json_response(http_error_body(exc.status, request.method, request.path,
                                                 exc.reason), status=exc.status)
    except ConnectionResetError as exc:
        transport = request.transport
        if transport is not None and not transport.is_closing():
            log.exception("unhandled error in %s %s", request.method, request.path)
            return error_response(exc)
        # The client went away (mid-body, say): no fault here, and no one to answer.
        log.debug("client gone during %s %s: %s", request.method, request.path, exc)
        response = web.Response(status=400)
        response.force_close()
        return response
    except Exception as exc:
        log.exception("unhandled error in %s %s", request.method, request.path)
        return error_response(exc)


def query_int(request: web.Request, name: str) -> int | None:
    raw = request.query.get(name)
    if raw is None:
        return None
    # int() would also take "١٢", " 12", "+3" and "1_000": only ASCII digits. A huge
    # index is a valid one not reached yet; past int()'s digit limit it is refused.
    try:
        if not (raw.isascii() and raw.isdigit()):
            raise ValueError(raw)
        return int(raw)
    except ValueError:
        shown = raw if len(raw) <= 40 else raw[:40] + "..."
        raise ConfigError(f"{name}: {shown!r} is not a non-negative integer", name) from None


def blocking_wait(request: web.Request) -> float:
    """How long the leader may hold a forwarded request: a blocking query's ``wait``."""
    if "index" not in request.query:
        return 0.0
    try:
        return min(parse_duration(request.query.get("wait", DEFAULT_WAIT), "wait"), MAX_WAIT)
    except ConfigError:
        return 0.0  # the leader refuses it at once


def query_flag(request: web.Request, name: str) -> bool:
    raw = request.query.get(name)
    return raw is not None and raw.lower() not in ("0", "false", "no")


class Api:
    """The server's HTTP API over ``node``; ``heartbeats`` notes agents' node
    heartbeats. Both are built by the server and handed in. ``join_token`` is the
    cluster's secret, which lets another server found or join (``access.py``);
    ``enforce_acl`` False is for a benchmark's baseline only."""

    def __init__(self, node: ControlPlane, heartbeats: Heartbeats,
                 join_token: str | None = None, enforce_acl: bool = True) -> None:
        self.node = node
        self.sm = node.machine
        self.heartbeats = heartbeats
        self.guard = Guard(lambda: self.sm.acl, join_token, enforce_acl,
                           lambda: self.node.is_leader)
        self.metrics = ServerMetrics(node.status, lambda: self.sm.index,
                                     lambda: self.guard.refused)
        self.openapi_body: bytes | None = None
        self.ca_file: str | None = None  # the cluster's root: the leader's HTTPS is checked
        self.ca_token: str | None = None  # what the CA's roots are derived from

    def service_of(self, request: web.Request) -> str:
        """The service of the instance a route names ('' if there is none)."""
        inst = self.sm.instances.get(request.match_info["id"])
        return inst.service if inst is not None else ""

    def routes(self) -> list[tuple[str, str, Handler, Need]]:
        """Every route of this module with what it needs (``access.py``)."""
        service_of = self.service_of
        return [
            ("GET", "/v1/status", self.status, Need("operator")),
            ("GET", "/v1/openapi.json", self.openapi_page, Need(None)),
            ("POST", "/v1/raft/transfer-leader", self.transfer_leader,
             Need("operator", "write")),
            ("POST", "/v1/raft/peers", self.add_peer, Need("operator", "write", join=True)),
            ("DELETE", "/v1/raft/peers/{id}", self.remove_peer, Need("operator", "write")),
            ("GET", "/v1/raft/self", self.raft_self, Need("operator", join=True)),
            ("PUT", "/v1/catalog/register", self.register,
             Need("service", "write", in_body=True)),
            ("PUT", "/v1/catalog/deregister/{id}", self.deregister,
             Need("service", "write", service_of)),
            ("PUT", "/v1/health/{id}", self.set_health, Need("service", "write", service_of)),
            ("GET", "/v1/services", self.services, Need("service", listing=True)),
            ("GET", "/v1/services/{name}/instances", self.instances,
             Need("service", name="name")),
            ("GET", "/v1/kv", self.kv_list, Need("kv", listing=True)),
            ("GET", "/v1/kv/{key:.+}", self.kv_get, Need("kv", name="key")),
            ("PUT", "/v1/kv/{key:.+}", self.kv_put, Need("kv", "write", "key")),
            ("DELETE", "/v1/kv/{key:.+}", self.kv_delete, Need("kv", "write", "key")),
            ("GET", "/v1/config", self.config_list, Need("config", listing=True)),
            ("GET", "/v1/config/{service}", self.config_get, Need("config", name="service")),
            ("PUT", "/v1/config/{service}", self.config_set,
             Need("config", "write", "service")),
            ("DELETE", "/v1/config/{service}", self.config_delete,
             Need("config", "write", "service")),
        ]

    async def propose(self, command: Any) -> Any:
        """Every write goes through here, so its latency is measured once."""
        started = time.perf_counter()
        result = await self.node.propose(command)
        self.metrics.commit_latency.observe(time.perf_counter() - started)
        return result

    async def transfer_leader(self, request: web.Request) -> web.Response:
        target = await self.node.transfer_leader(request.query.get("to"))
        return self.reply({"leader": target}, self.sm.index)

    async def add_peer(self, request: web.Request) -> web.Response:
        body = parse_body(PeerBody, await read_json(request))
        members = await self.node.add_member(body.id, parse_hostport(body.raft, "raft"),
                                             to_url(body.http))
        return self.reply({"members": members}, self.sm.index)

    async def remove_peer(self, request: web.Request) -> web.Response:
        members = await self.node.remove_member(request.match_info["id"])
        return self.reply({"members": members}, self.sm.index)

    async def raft_self(self, request: web.Request) -> web.Response:
        return self.reply(self.node.self_info(), self.sm.index)

    async def openapi_page(self, request: web.Request) -> web.Response:
        if self.openapi_body is None:
            self.openapi_body = json.dumps(openapi.document()).encode()
        return web.Response(body=self.openapi_body, content_type="application/json",
                            headers={INDEX_HEADER: str(self.sm.index)})

    async def metrics_page(self, request: web.Request) -> web.Response:
        return web.Response(body=generate_latest(self.metrics.registry),
                            headers={"Content-Type": CONTENT_TYPE_LATEST})

    @web.middleware
    async def forward_middleware(self, request: web.Request, handler: Handler
                                 ) -> web.StreamResponse:
        """A write that reaches a follower goes to the leader, transparently."""
        try:
            return await handler(request)
        except NotLeader as refusal:
            leader = self.node.leader_url()
            if leader is None or request.headers.get(FORWARDED_HEADER):
                raise
            body = await request.read()
            headers = {FORWARDED_HEADER: "1"}
            for name in CREDENTIAL_HEADERS:  # the leader judges the caller again
                value = request.headers.get(name)
                if value is not None and value.isascii():  # else it cannot be sent
                    headers[name] = value
            if request.content_type:
                headers["Content-Type"] = request.content_type
            try:
                tls = client_tls(self.ca_file) if leader.startswith("https:") else None
                async with session_without_retries(tls) as session, session.request(
                        request.method, leader + request.path_qs, data=body, headers=headers,
                        timeout=aiohttp.ClientTimeout(total=30 + blocking_wait(request))
                        ) as resp:
                    payload = await resp.read()
                    out = {k: v for k, v in resp.headers.items()
                           if k in (INDEX_HEADER, "Content-Type")}
                    return web.Response(body=payload, status=resp.status, headers=out)
            except aiohttp.ClientConnectorError as exc:  # it never left: nothing changed
                raise NotLeader(f"{refusal}; cannot reach the leader at {leader}: {exc}"
                                ) from None
            except (TimeoutError, aiohttp.ClientError, OSError) as exc:
                # The leader may have applied it before the answer was lost.
                raise Unavailable(f"lost the leader at {leader} before it answered "
                                  f"({exc or type(exc).__name__}); the request may "
                                  "have been applied") from None

    def app(self) -> web.Application:
        # The guard inside the forwarding: a follower that does not know a token yet
        # hands the request to the leader, whose state judges it.
        app = web.Application(middlewares=[errors_middleware, self.forward_middleware,
                                           self.guard.middleware],
                              client_max_size=4 * 1024 * 1024)
        r = app.router
        r.add_get("/metrics", self.metrics_page)  # outside /v1: open, read-only
        UiRoutes().add(r)  # the web UI's static files: open, read-only
        for group in (self.routes(), NetworkRoutes(self).routes(),
                      ContainerRoutes(self).routes(), NodeRoutes(self).routes(),
                      VipRoutes(self).routes(), AclRoutes(self).routes(),
                      CaRoutes(self).routes(), IntentionRoutes(self).routes(),
                      ObjectRoutes(self).routes(), PodRoutes(self).routes(),
                      SignalRoutes(self, app).routes()):
            for method, path, handler, need in group:
                self.guard.add(r, method, path, handler, need)
        return app

    async def read_barrier(self, request: web.Request) -> None:
        """Honour ``?consistency=stale|default|consistent`` (or Consul's ``?stale`` and
        ``?consistent``) and ``?max_stale=D``; raises NotLeader to be forwarded."""
        mode = request.query.get("consistency")
        if mode is None:
            mode = "stale" if "stale" in request.query else \
                "consistent" if "consistent" in request.query else "default"
        if mode not in ("stale", "default", "consistent"):
            raise ConfigError(f"consistency: {mode!r} is not stale, default or consistent",
                              "consistency")
        raw = request.query.get("max_stale")
        max_stale = parse_duration(raw, "max_stale") if raw is not None else None
        await self.node.read_barrier(mode, max_stale)

    async def block(self, request: web.Request, current: Callable[[], int]) -> int:
        """Honour the read's consistency, then ``?index=N&wait=D``; return the index."""
        await self.read_barrier(request)
        index = query_int(request, "index")
        if index is None:
            return current()
        wait = min(parse_duration(request.query.get("wait", DEFAULT_WAIT), "wait"), MAX_WAIT)
        self.metrics.blocking_queries.inc()
        try:
            found = await self.node.wait_for_change(current, index, wait)
        finally:
            self.metrics.blocking_queries.dec()
        self.metrics.blocking_returns.labels("changed" if found > index else "timeout").inc()
        return found

    def reply(self, body: Any, index: int, status: int = 200) -> web.Response:
        return web.json_response(body, status=status, headers={
            INDEX_HEADER: str(index), **self.node.read_headers()})

    async def status(self, request: web.Request) -> web.Response:
        return self.reply({"version": meshlet.__version__, **self.node.status(),
                           "index": self.sm.index,
                           "services": len(self.sm.services()),
                           "instances": len(self.sm.instances),
                           "kv_keys": len(self.sm.kv)}, self.sm.index)

    async def register(self, request: web.Request) -> web.Response:
        body = parse_body(RegisterBody, await read_json(request))
        require(request, "service", body.service, "write")
        instance_id = body.id or f"{body.service}-{uuid.uuid4().hex[:8]}"
        result = await self.propose(RegisterInstance(
            id=instance_id, service=body.service, address=body.address, port=body.port,
            tags=tuple(body.tags), meta=body.meta, weight=body.weight, zone=body.zone,
            node=body.node, status=body.status))
        return self.reply(result.value, result.index)

    async def deregister(self, request: web.Request) -> web.Response:
        result = await self.propose(DeregisterInstance(request.match_info["id"]))
        return self.reply({"deregistered": request.match_info["id"]}, result.index)

    async def set_health(self, request: web.Request) -> web.Response:
        body = parse_body(HealthBody, await read_json(request))
        result = await self.propose(SetHealth(
            request.match_info["id"], body.status, body.output, body.restarts, body.pid))
        return self.reply(result.value, result.index)

    async def services(self, request: web.Request) -> web.Response:
        index = await self.block(request, lambda: self.sm.catalog_index)
        return self.reply(visible(request, "service", self.sm.services().values(),
                                  lambda s: str(s["name"])), index)

    async def instances(self, request: web.Request) -> web.Response:
        name = request.match_info["name"]
        passing = query_flag(request, "passing")
        index = await self.block(request, lambda: self.sm.service_index.get(name, 0))
        if name not in self.sm.service_index and "index" not in request.query:
            raise NotFound(f"service {name!r} is not known", "service")
        found = self.sm.service_instances(name, passing_only=passing)
        return self.reply([i.to_dict() for i in found], index)

    async def kv_list(self, request: web.Request) -> web.Response:
        prefix = request.query.get("prefix", "")
        index = await self.block(request, lambda: self.sm.kv_index)
        return self.reply([kv_to_dict(e) for e in self.kv_visible(request, prefix)], index)

    def kv_visible(self, request: web.Request, prefix: str) -> list[Any]:
        return visible(request, "kv", self.sm.kv_list(prefix), lambda e: e.key)

    async def kv_get(self, request: web.Request) -> web.StreamResponse:
        key = request.match_info["key"]
        if query_flag(request, "recurse"):
            index = await self.block(request, lambda: self.sm.kv_index)
            return self.reply([kv_to_dict(e) for e in self.kv_visible(request, key)], index)
        await self.read_barrier(request)
        entry = self.sm.kv.get(key)
        if entry is None:
            raise NotFound(f"key {key!r} not found", "key")
        if query_flag(request, "raw"):
            return web.Response(body=entry.value, headers={
                INDEX_HEADER: str(entry.modify_index), **self.node.read_headers()},
                content_type="application/octet-stream")
        return self.reply(kv_to_dict(entry), entry.modify_index)

    async def kv_put(self, request: web.Request) -> web.Response:
        result = await self.propose(KVPut(
            request.match_info["key"], await request.read(), query_int(request, "cas")))
        return self.reply(result.value, result.index)

    async def kv_delete(self, request: web.Request) -> web.Response:
        result = await self.propose(KVDelete(request.match_info["key"],
                                                  query_int(request, "cas")))
        return self.reply({"deleted": result.value}, result.index)

    def config_body(self, service: str) -> dict[str, Any]:
        entry = self.sm.config.get(service)
        body: dict[str, Any] = config_to_dict(entry) if entry else {
            "service": service, "settings": {}, "modify_index": 0}
        body["effective"] = effective(body["settings"])
        return body

    async def config_list(self, request: web.Request) -> web.Response:
        index = await self.block(request, lambda: self.sm.config_index)
        return self.reply([self.config_body(s) for s in visible(
            request, "config", sorted(self.sm.config), str)], index)

    async def config_get(self, request: web.Request) -> web.Response:
        service = request.match_info["service"]
        index = await self.block(request, lambda: self.sm.config_index)
        return self.reply(self.config_body(service), index)

    async def config_set(self, request: web.Request) -> web.Response:
        settings = await read_json(request)
        if not isinstance(settings, dict):
            raise ConfigError("body: expected an object of settings", "body")
        result = await self.propose(ConfigSet(
            request.match_info["service"], settings, query_flag(request, "replace")))
        return self.reply(self.config_body(request.match_info["service"]), result.index)

    async def config_delete(self, request: web.Request) -> web.Response:
        result = await self.propose(ConfigDelete(request.match_info["service"]))
        return self.reply({"deleted": request.match_info["service"]}, result.index)

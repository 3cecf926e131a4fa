"""The pods API: a Deployment's replicas, where the controller placed them and what
their agents report.

Reading a pod needs ``deployment`` read on its Deployment (``NAMESPACE/DEPLOYMENT``),
or a token acting for the pod's node; the agent's token, with its node identity,
reports on the pods placed there and deletes them once terminating, and nothing else
(the model of ``PUT /v1/containers/{name}/status``). Creating pods and deleting any
pod is the controller's: ``operator`` write. Asking a pod to stop (``terminate``, what
``meshlet delete pod`` does) needs ``deployment`` write.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Annotated, Any, Literal

from aiohttp import web
from pydantic import Field

from meshlet.api.access import AUTHORIZER, Need, visible
from meshlet.api.schemas import Body, parse_body, read_json
from meshlet.security.acl import DENY_ALL
from meshlet.state.commands import PodCreate, PodDelete, PodReport, PodTerminate
from meshlet.state.pods import Pod

if TYPE_CHECKING:
    from meshlet.api.routes import Api, Handler


class PodBody(Body):
    name: str
    namespace: str = "default"
    deployment: str
    revision: int = Field(ge=1)
    template_hash: str
    node: str
    container: dict[str, Any]
    service: str = ""
    created: float = Field(default=0.0, ge=0, allow_inf_nan=False)   # 0: now


class PodReportBody(Body):
    phase: Literal["pending", "running", "failed", "terminating"]
    ready: bool = False
    restarts: int = Field(default=0, ge=0, lt=2 ** 31)
    detail: str = Field(default="", max_length=4096)
    address: str = Field(default="", max_length=255)
    pid: int | None = Field(default=None, ge=1, lt=2 ** 31)
    metrics: dict[Literal["cpu", "requests_per_second", "p95_latency_seconds"],
                  Annotated[float, Field(ge=0, le=1e12, allow_inf_nan=False)] | None] = {}


def pod_acl_name(pod: Pod) -> str:
    return f"{pod.namespace}/{pod.deployment}"


class PodRoutes:
    def __init__(self, api: Api) -> None:
        self.api = api

    def routes(self) -> list[tuple[str, str, Handler, Need]]:
        """Every route with what it needs (``access.py``)."""
        one = "/v1/pods/{name}"
        return [
            ("GET", "/v1/pods", self.list, Need("deployment", listing=True)),
            ("POST", "/v1/pods", self.create, Need("operator", "write")),
            ("GET", one, self.get,
             Need("deployment", name=self.acl_name, node_of=self.node_of)),
            ("DELETE", one, self.delete, Need("operator", "write", node_of=self.node_of)),
            ("PUT", one + "/report", self.report,
             Need("deployment", "write", self.acl_name, node_of=self.node_of)),
            ("PUT", one + "/terminate", self.terminate,
             Need("deployment", "write", self.acl_name)),
        ]

    def _pod(self, request: web.Request) -> Pod | None:
        return self.api.sm.pods.pods.get(request.match_info["name"])

    def acl_name(self, request: web.Request) -> str:
        pod = self._pod(request)
        return "" if pod is None else pod_acl_name(pod)

    def node_of(self, request: web.Request) -> str | None:
        pod = self._pod(request)
        return None if pod is None else pod.node

    async def list(self, request: web.Request) -> web.Response:
        table = self.api.sm.pods
        node = request.query.get("node") or None
        index = await self.api.block(
            request, lambda: table.node_index.get(node, 0) if node else table.index)
        found = visible(request, "deployment",
                        table.select(node, request.query.get("namespace") or None,
                                     request.query.get("deployment") or None),
                        pod_acl_name, lambda p: p.node)
        return self.api.reply([p.to_dict() for p in found], index)

    async def get(self, request: web.Request) -> web.Response:
        table = self.api.sm.pods
        index = await self.api.block(request, lambda: table.index)
        return self.api.reply(table.get(request.match_info["name"]).to_dict(), index)

    async def create(self, request: web.Request) -> web.Response:
        body = parse_body(PodBody, await read_json(request))
        result = await self.api.propose(PodCreate(
            body.name, body.namespace, body.deployment, body.revision, body.template_hash,
            body.node, body.container, body.service, body.created or time.time()))
        return self.api.reply(result.value, result.index, status=201)

    async def delete(self, request: web.Request) -> web.Response:
        """The controller deletes any pod; an agent (acting for the pod's node, without
        operator write) only a terminating one of its own."""
        name = request.match_info["name"]
        operator = request.get(AUTHORIZER, DENY_ALL).allows("operator", "", "write")
        node = "" if operator else (self.node_of(request) or "")
        result = await self.api.propose(PodDelete(name, node))
        return self.api.reply(result.value, result.index)

    async def report(self, request: web.Request) -> web.Response:
        body = parse_body(PodReportBody, await read_json(request))
        # The node it is on now: should it move before this applies, the state refuses.
        node = self.node_of(request) or ""
        result = await self.api.propose(PodReport(
            request.match_info["name"], body.phase, body.ready, body.restarts, body.detail,
            body.address, node, body.pid, {str(k): v for k, v in body.metrics.items()}))
        return self.api.reply(result.value, result.index)

    async def terminate(self, request: web.Request) -> web.Response:
        result = await self.api.propose(PodTerminate(request.match_info["name"]))
        return self.api.reply(result.value, result.index)

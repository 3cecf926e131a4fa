"""The objects API: the Kubernetes objects `meshlet apply` stores, as kubectl's API
server keeps them. Every change is a command; the server validates a manifest again
(``kube_objects.validate_object``) before proposing it, and the state again as it
applies.

Paths name an object as ``/v1/objects/KIND/NAMESPACE/NAME``; a Namespace, which is
in no namespace, has ``-`` there. ACLs use kind ``deployment`` on the name
``NAMESPACE/NAME`` (a Namespace: its name), so a rule with prefix ``shop/`` covers what
is inside namespace ``shop`` and one with prefix ``shop`` the namespace as well. Read
lets a token get and list; write lets it apply, delete and scale. Applying a
Deployment or a Service also needs ``service`` write on its name: their pods join the
catalog service of that name (a Deployment's own when no Service selects it), and
their sidecars get its identity, whatever the namespace. Status is the controller's:
``operator`` write.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from aiohttp import web
from pydantic import Field

from meshlet.api.access import Need, require, visible
from meshlet.api.schemas import Body, parse_body, read_json
from meshlet.errors import ConfigError
from meshlet.kube_objects import (
    KINDS,
    MAX_REPLICAS,
    Deployment,
    Namespace,
    Service,
    validate_object,
)
from meshlet.state.commands import ObjectApply, ObjectDelete, ObjectScale, ObjectStatus
from meshlet.state.objects import DEFAULT_NAMESPACE

if TYPE_CHECKING:
    from meshlet.api.routes import Api, Handler

CLUSTER_SCOPED = "-"      # the namespace segment of a Namespace's path


class ApplyBody(Body):
    manifest: dict[str, Any]


class ScaleBody(Body):
    replicas: int = Field(ge=0, le=MAX_REPLICAS)


class StatusBody(Body):
    status: dict[str, Any]
    events: list[dict[str, Any]] = Field(default=[], max_length=50)


def acl_name(kind: str, namespace: str, name: str) -> str:
    """What ACL rules match an object by: ``NAMESPACE/NAME``, or a Namespace's name."""
    return name if kind == "Namespace" else f"{namespace}/{name}"


def object_key(request: web.Request) -> tuple[str, str, str]:
    """(kind, namespace, name) from the path; raises ConfigError for an unknown kind."""
    info = request.match_info
    kind = info["kind"]
    if kind not in KINDS:
        raise ConfigError(f"kind: {kind!r} is not one of {', '.join(KINDS)}", "kind")
    namespace = "" if info["namespace"] == CLUSTER_SCOPED else info["namespace"]
    return kind, namespace, info["name"]


def path_acl_name(request: web.Request) -> str:
    info = request.match_info
    return acl_name(info["kind"], info["namespace"], info["name"])


class ObjectRoutes:
    def __init__(self, api: Api) -> None:
        self.api = api

    def routes(self) -> list[tuple[str, str, Handler, Need]]:
        """Every route with what it needs (``access.py``)."""
        one = "/v1/objects/{kind}/{namespace}/{name}"
        write = Need("deployment", "write", path_acl_name)
        return [
            ("GET", "/v1/objects", self.list, Need("deployment", listing=True)),
            ("POST", "/v1/objects", self.apply, Need("deployment", "write", in_body=True)),
            ("GET", one, self.get, Need("deployment", name=path_acl_name)),
            ("DELETE", one, self.delete, write),
            ("POST", one + "/scale", self.scale, write),
            ("PUT", one + "/status", self.status, Need("operator", "write")),
        ]

    def _index(self, kind: str | None) -> int:
        table = self.api.sm.objects
        return table.kind_index.get(kind, 0) if kind else table.index

    async def list(self, request: web.Request) -> web.Response:
        kind = request.query.get("kind") or None
        namespace = request.query.get("namespace") or None
        if kind is not None and kind not in KINDS:
            raise ConfigError(f"kind: {kind!r} is not one of {', '.join(KINDS)}", "kind")
        index = await self.api.block(request, lambda: self._index(kind))
        found = visible(request, "deployment",
                        self.api.sm.objects.select(kind, namespace),
                        lambda r: acl_name(r.kind, r.namespace, r.name))
        return self.api.reply([r.to_dict() for r in found], index)

    async def get(self, request: web.Request) -> web.Response:
        kind, namespace, name = object_key(request)
        index = await self.api.block(request, lambda: self._index(kind))
        return self.api.reply(self.api.sm.objects.get(kind, namespace, name).to_dict(),
                              index)

    async def apply(self, request: web.Request) -> web.Response:
        body = parse_body(ApplyBody, await read_json(request))
        obj = validate_object(body.manifest)
        namespace = "" if isinstance(obj, Namespace) else obj.namespace or DEFAULT_NAMESPACE
        require(request, "deployment", acl_name(obj.kind, namespace, obj.name), "write")
        if isinstance(obj, (Deployment, Service)):
            # Its pods join the catalog service of that name, with its identity.
            require(request, "service", obj.name, "write")
        result = await self.api.propose(ObjectApply(obj.canonical(), time.time()))
        return self.api.reply(result.value, result.index)

    async def delete(self, request: web.Request) -> web.Response:
        result = await self.api.propose(ObjectDelete(*object_key(request)))
        return self.api.reply(result.value, result.index)

    async def scale(self, request: web.Request) -> web.Response:
        body = parse_body(ScaleBody, await read_json(request))
        result = await self.api.propose(ObjectScale(*object_key(request), body.replicas))
        return self.api.reply(result.value, result.index)

    async def status(self, request: web.Request) -> web.Response:
        body = parse_body(StatusBody, await read_json(request))
        result = await self.api.propose(ObjectStatus(*object_key(request), body.status,
                                                     tuple(body.events)))
        return self.api.reply(result.value, result.index)

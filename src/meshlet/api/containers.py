"""The containers API: what `meshlet run`, `ps`, `stop`, `rm` and `network connect`
ask for, and where agents report what they see. Every change is a command."""

from __future__ import annotations

from typing import TYPE_CHECKING

from aiohttp import web

from meshlet.api.access import Need, require, visible
from meshlet.api.schemas import (
    ContainerBody,
    ContainerStatusBody,
    DesiredBody,
    parse_body,
    read_json,
)
from meshlet.state.commands import (
    ContainerConnect,
    ContainerCreate,
    ContainerDelete,
    ContainerDesire,
    ContainerReport,
)

if TYPE_CHECKING:
    from meshlet.api.routes import Api, Handler


class ContainerRoutes:
    def __init__(self, api: Api) -> None:
        self.api = api

    def routes(self) -> list[tuple[str, str, Handler, Need]]:
        """Every route with what it needs (``access.py``). Writing a container is
        running a command as root on its node's agent. The agent's token, acting for
        its node, may read and report the containers placed there, and nothing else."""
        write = Need("container", "write", "name")
        on_node = self.node_of
        return [
            ("GET", "/v1/containers", self.list, Need("container", listing=True)),
            ("POST", "/v1/containers", self.create,
             Need("container", "write", in_body=True)),
            ("GET", "/v1/containers/{name}", self.inspect,
             Need("container", name="name", node_of=on_node)),
            ("DELETE", "/v1/containers/{name}", self.delete, write),
            ("PUT", "/v1/containers/{name}/desired", self.desire, write),
            ("PUT", "/v1/containers/{name}/status", self.report,
             Need("container", "write", "name", node_of=on_node)),
            ("PUT", "/v1/containers/{name}/networks/{network}", self.connect, write),
            ("DELETE", "/v1/containers/{name}/networks/{network}", self.disconnect, write),
        ]

    def node_of(self, request: web.Request) -> str | None:
        """The node the request's container is placed on (None: no such container)."""
        found = self.api.sm.containers.containers.get(request.match_info["name"])
        return None if found is None else found.node

    async def list(self, request: web.Request) -> web.Response:
        table = self.api.sm.containers
        index = await self.api.block(request, lambda: table.index)
        node = request.query.get("node")
        found = [c.to_dict() for name, c in visible(
                     request, "container", sorted(table.containers.items()),
                     lambda i: i[0], lambda i: i[1].node)
                 if node is None or c.node == node]
        return self.api.reply(found, index)

    async def inspect(self, request: web.Request) -> web.Response:
        table = self.api.sm.containers
        index = await self.api.block(request, lambda: table.index)
        return self.api.reply(table.get(request.match_info["name"]).to_dict(), index)

    async def create(self, request: web.Request) -> web.Response:
        body = parse_body(ContainerBody, await read_json(request))
        require(request, "container", body.name, "write")
        result = await self.api.propose(ContainerCreate(
            body.name, body.node, tuple(body.command), body.env, tuple(body.networks),
            tuple(body.ports), body.image, body.image_id, tuple(body.entrypoint),
            body.user, body.workdir, body.restart, body.memory, body.cpus,
            body.stop_timeout))
        return self.api.reply(result.value, result.index, status=201)

    async def delete(self, request: web.Request) -> web.Response:
        name = request.match_info["name"]
        result = await self.api.propose(ContainerDelete(name))
        return self.api.reply({"deleted": name}, result.index)

    async def desire(self, request: web.Request) -> web.Response:
        body = parse_body(DesiredBody, await read_json(request))
        result = await self.api.propose(ContainerDesire(request.match_info["name"],
                                                        body.desired, body.stop_timeout))
        return self.api.reply(result.value, result.index)

    async def report(self, request: web.Request) -> web.Response:
        body = parse_body(ContainerStatusBody, await read_json(request))
        result = await self.api.propose(ContainerReport(
            request.match_info["name"], body.status, body.pid, body.exit_code,
            body.namespace, body.log, body.detail, body.restart_count))
        return self.api.reply(result.value, result.index)

    async def connect(self, request: web.Request) -> web.Response:
        result = await self.api.propose(ContainerConnect(
            request.match_info["name"], request.match_info["network"], True))
        return self.api.reply(result.value, result.index)

    async def disconnect(self, request: web.Request) -> web.Response:
        result = await self.api.propose(ContainerConnect(
            request.match_info["name"], request.match_info["network"], False))
        return self.api.reply(result.value, result.index)

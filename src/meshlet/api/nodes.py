"""The nodes API: agents register the host they run on and the address other hosts
reach it on, and deregister when they leave."""

from __future__ import annotations

from typing import TYPE_CHECKING

from aiohttp import web

from meshlet.api.access import Need, visible
from meshlet.api.schemas import NodeBody, parse_body, read_json
from meshlet.state.commands import NodeDeregister, NodeRegister

if TYPE_CHECKING:
    from meshlet.api.routes import Api, Handler


class NodeRoutes:
    def __init__(self, api: Api) -> None:
        self.api = api

    def routes(self) -> list[tuple[str, str, Handler, Need]]:
        """Every route with what it needs (``access.py``)."""
        return [
            ("GET", "/v1/nodes", self.list, Need("node", listing=True)),
            ("PUT", "/v1/nodes/{name}", self.register, Need("node", "write", "name")),
            ("DELETE", "/v1/nodes/{name}", self.deregister, Need("node", "write", "name")),
        ]

    async def list(self, request: web.Request) -> web.Response:
        table = self.api.sm.nodes
        index = await self.api.block(request, lambda: table.index)
        names = visible(request, "node", sorted(table.nodes), str)
        return self.api.reply([table.nodes[n].to_dict() for n in names], index)

    async def register(self, request: web.Request) -> web.Response:
        """Also the agent's heartbeat: the answer's ``ttl`` says how long the node may
        stay silent before it is deregistered."""
        name = request.match_info["name"]
        body = parse_body(NodeBody, await read_json(request))
        result = await self.api.propose(NodeRegister(name, body.address, body.zone, body.cpus,
                                                    body.memory, body.metrics))
        self.api.heartbeats.heard_from(name)
        return self.api.reply({**result.value, "ttl": self.api.heartbeats.ttl}, result.index)

    async def deregister(self, request: web.Request) -> web.Response:
        name = request.match_info["name"]
        result = await self.api.propose(NodeDeregister(name))
        return self.api.reply({"deregistered": name}, result.index)

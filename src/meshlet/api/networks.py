"""The networks API: create, list, inspect and remove networks, and assign and
release workload addresses (IPAM). Every change is a command through Raft."""

from __future__ import annotations

from typing import TYPE_CHECKING

from aiohttp import web

from meshlet.api.schemas import AddressBody, NetworkBody, parse_body, read_json
from meshlet.state.commands import AddressAssign, AddressRelease, NetworkCreate, NetworkDelete

if TYPE_CHECKING:
    from meshlet.api.routes import Api


class NetworkRoutes:
    def __init__(self, api: Api) -> None:
        self.api = api

    def add_to(self, router: web.UrlDispatcher) -> None:
        router.add_get("/v1/networks", self.list)
        router.add_post("/v1/networks", self.create)
        router.add_get("/v1/networks/{name}", self.inspect)
        router.add_delete("/v1/networks/{name}", self.delete)
        router.add_put("/v1/networks/{name}/addresses/{owner}", self.assign)
        router.add_delete("/v1/networks/{name}/addresses/{owner}", self.release)

    async def list(self, request: web.Request) -> web.Response:
        table = self.api.sm.networks
        index = await self.api.block(request, lambda: table.index)
        return self.api.reply([table.networks[n].to_dict() for n in sorted(table.networks)],
                              index)

    async def inspect(self, request: web.Request) -> web.Response:
        table = self.api.sm.networks
        index = await self.api.block(request, lambda: table.index)
        return self.api.reply(table.get(request.match_info["name"]).to_dict(), index)

    async def create(self, request: web.Request) -> web.Response:
        body = parse_body(NetworkBody, await read_json(request))
        result = await self.api.propose(NetworkCreate(
            body.name, body.driver, body.subnet, body.gateway, body.internal))
        return self.api.reply(result.value, result.index, status=201)

    async def delete(self, request: web.Request) -> web.Response:
        name = request.match_info["name"]
        result = await self.api.propose(NetworkDelete(name))
        return self.api.reply({"deleted": name}, result.index)

    async def assign(self, request: web.Request) -> web.Response:
        raw = await request.read()
        body = parse_body(AddressBody, await read_json(request)) if raw else AddressBody()
        result = await self.api.propose(AddressAssign(
            request.match_info["name"], request.match_info["owner"], body.address))
        return self.api.reply(result.value, result.index)

    async def release(self, request: web.Request) -> web.Response:
        result = await self.api.propose(AddressRelease(request.match_info["name"],
                                                       request.match_info["owner"]))
        return self.api.reply({"released": result.value}, result.index)

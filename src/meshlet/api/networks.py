"""The networks API: create, list, inspect and remove networks, and assign and
release workload addresses (IPAM). Every change is a command through Raft."""

from __future__ import annotations

from typing import TYPE_CHECKING

from aiohttp import web

from meshlet.api.access import Need, require, visible
from meshlet.api.schemas import AddressBody, NetworkBody, parse_body, read_json
from meshlet.state.commands import AddressAssign, AddressRelease, NetworkCreate, NetworkDelete

if TYPE_CHECKING:
    from meshlet.api.routes import Api, Handler


class NetworkRoutes:
    def __init__(self, api: Api) -> None:
        self.api = api

    def routes(self) -> list[tuple[str, str, Handler, Need]]:
        """Every route with what it needs (``access.py``)."""
        return [
            ("GET", "/v1/networks", self.list, Need("network", listing=True)),
            ("POST", "/v1/networks", self.create, Need("network", "write", in_body=True)),
            ("GET", "/v1/networks/{name}", self.inspect, Need("network", name="name")),
            ("DELETE", "/v1/networks/{name}", self.delete, Need("network", "write", "name")),
            ("PUT", "/v1/networks/{name}/addresses/{owner}", self.assign,
             Need("network", "write", "name")),
            ("DELETE", "/v1/networks/{name}/addresses/{owner}", self.release,
             Need("network", "write", "name")),
        ]

    async def list(self, request: web.Request) -> web.Response:
        table = self.api.sm.networks
        index = await self.api.block(request, lambda: table.index)
        names = visible(request, "network", sorted(table.networks), str)
        return self.api.reply([table.networks[n].to_dict() for n in names], index)

    async def inspect(self, request: web.Request) -> web.Response:
        table = self.api.sm.networks
        index = await self.api.block(request, lambda: table.index)
        return self.api.reply(table.get(request.match_info["name"]).to_dict(), index)

    async def create(self, request: web.Request) -> web.Response:
        body = parse_body(NetworkBody, await read_json(request))
        require(request, "network", body.name, "write")
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

"""The service virtual IPs API: each service's address and the ports its instances
serve on, and the CIDR they come from."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from aiohttp import web

from meshlet.api.access import Need, visible
from meshlet.api.schemas import CidrBody, parse_body, read_json
from meshlet.state.commands import ServiceCidrSet

if TYPE_CHECKING:
    from meshlet.api.routes import Api, Handler
    from meshlet.state import StateMachine


def listing(sm: StateMachine) -> list[dict[str, Any]]:
    """Each service's ports: where its apps listen (``app_port``, which a sidecar in a
    client's namespace serves on the virtual IP), else the registered port."""
    ports: dict[str, set[int]] = {}
    for inst in sm.instances.values():
        app_port = inst.meta.get("app_port", "")
        ports.setdefault(inst.service, set()).add(
            int(app_port) if app_port.isascii() and app_port.isdigit() else inst.port)
    return [{"service": s, "vip": vip, "ports": sorted(ports.get(s, ()))}
            for s, vip in sorted(sm.vips.vips.items())]


class VipRoutes:
    def __init__(self, api: Api) -> None:
        self.api = api

    def routes(self) -> list[tuple[str, str, Handler, Need]]:
        """Every route with what it needs (``access.py``)."""
        return [
            ("GET", "/v1/vips", self.list, Need("service", listing=True)),
            ("PUT", "/v1/vips/cidr", self.set_cidr, Need("operator", "write")),
        ]

    async def list(self, request: web.Request) -> web.Response:
        sm = self.api.sm
        index = await self.api.block(request, lambda: max(sm.vips.index, sm.catalog_index))
        shown = visible(request, "service", listing(sm), lambda v: str(v["service"]))
        return self.api.reply({"cidr": sm.vips.cidr, "vips": shown}, index)

    async def set_cidr(self, request: web.Request) -> web.Response:
        body = parse_body(CidrBody, await read_json(request))
        result = await self.api.propose(ServiceCidrSet(body.cidr))
        return self.api.reply(result.value, result.index)

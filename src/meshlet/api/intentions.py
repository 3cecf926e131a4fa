"""The intentions API, as Consul's ``/v1/connect/intentions``: who may call whom, and
the check a caller can ask for. Changing an intention needs ``service`` write on its
destination (on every service for a ``*`` destination); reading one, read."""

from __future__ import annotations

from typing import TYPE_CHECKING

from aiohttp import web

from meshlet.api.access import AUTHORIZER, Need, require
from meshlet.api.schemas import read_json
from meshlet.intention_rules import WILDCARD, Intentions
from meshlet.security.acl import DENY_ALL
from meshlet.state.intentions import IntentionDelete, IntentionSet, parse

if TYPE_CHECKING:
    from meshlet.api.routes import Api, Handler


def resource(destination: str) -> str:
    """The service name an intention's rights are checked on ("" for ``*``: every)."""
    return "" if destination == WILDCARD else destination


class IntentionRoutes:
    def __init__(self, api: Api) -> None:
        self.api = api

    def routes(self) -> list[tuple[str, str, Handler, Need]]:
        """Every route with what it needs (``access.py``)."""
        return [
            ("GET", "/v1/intentions", self.list, Need("service", listing=True)),
            ("PUT", "/v1/intentions", self.set, Need("service", "write", in_body=True)),
            ("DELETE", "/v1/intentions/{source}/{destination}", self.delete,
             Need("service", "write", lambda r: resource(r.match_info["destination"]))),
            ("GET", "/v1/intentions/check", self.check,
             Need("service", name=lambda r: resource(r.query.get("destination", "")))),
        ]

    async def list(self, request: web.Request) -> web.Response:
        table = self.api.sm.intentions
        index = await self.api.block(request, lambda: table.index)
        authorizer = request.get(AUTHORIZER, DENY_ALL)
        shown = [i.to_dict() for i in table.ranked()
                 if authorizer.allows("service", resource(i.destination), "read")]
        return self.api.reply({"default_policy": table.default_policy,
                               "intentions": shown}, index)

    async def set(self, request: web.Request) -> web.Response:
        intention = parse(await read_json(request))
        require(request, "service", resource(intention.destination), "write")
        result = await self.api.propose(IntentionSet(intention.to_dict()))
        return self.api.reply(result.value, result.index)

    async def delete(self, request: web.Request) -> web.Response:
        source, destination = request.match_info["source"], request.match_info["destination"]
        result = await self.api.propose(IntentionDelete(source, destination))
        return self.api.reply({"deleted": {"source": source, "destination": destination}},
                              result.index)

    async def check(self, request: web.Request) -> web.Response:
        table = self.api.sm.intentions
        source = request.query.get("source", "")
        destination = request.query.get("destination", "")
        for name, value in (("source", source), ("destination", destination)):
            parse({"source": value if name == "source" else "*",
                   "destination": value if name == "destination" else "*",
                   "action": "allow"})  # the same names an intention takes
        decision = Intentions(destination, table.ranked(), table.default_policy).decide(
            source, request.query.get("method", ""), request.query.get("path", ""), {})
        return self.api.reply({"allowed": decision.allowed, "why": decision.why},
                              table.index)

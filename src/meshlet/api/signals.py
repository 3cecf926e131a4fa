"""``GET /v1/signals``: golden signals per service and per edge (docs/observability.md).

Any server answers, from its own sampler (``api/signal_sampler.py``), which runs only
while someone asks. A token sees only the services it may read, and the edges whose
both ends it may read.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from aiohttp import web

from meshlet.api.access import AUTHORIZER, Need
from meshlet.api.signal_sampler import SignalSampler
from meshlet.observe.signals import Instance, compute
from meshlet.security.acl import DENY_ALL, Authorizer

if TYPE_CHECKING:
    from meshlet.api.routes import Api, Handler


class SignalRoutes:
    def __init__(self, api: Api, app: web.Application) -> None:
        self.api = api
        self.sampler = SignalSampler(lambda: list(api.sm.instances.values()))
        app.on_cleanup.append(self.sampler.close)

    def routes(self) -> list[tuple[str, str, Handler, Need]]:
        """Every route with what it needs (``access.py``)."""
        return [("GET", "/v1/signals", self.signals, Need("service", listing=True))]

    async def signals(self, request: web.Request) -> web.Response:
        self.sampler.touch()
        authorizer: Authorizer = request.get(AUTHORIZER, DENY_ALL)

        def may(service: str) -> bool:
            return authorizer.management or authorizer.allows("service", service, "read")
        catalog = sorted((Instance(i.id, i.service) for i in self.api.sm.instances.values()
                          if may(i.service)), key=lambda i: i.id)
        rounds = list(self.sampler.rounds)
        body: dict[str, Any] = compute(catalog, rounds).to_dict(
            self.sampler.walls[-1] if self.sampler.walls else None)
        if not rounds:
            body["unreachable"] = []
        body["edges"] = [e for e in body["edges"] if may(e["source"])
                         and may(e["destination"])]
        return self.api.reply(body, self.api.sm.catalog_index)

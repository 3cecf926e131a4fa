"""The ACL API: tokens and policies, as Consul's ``/v1/acl/``.

A token's secret is made here, on the server that takes the request, and returned
once, in the answer to its creation; the command that is replicated carries its
SHA-256 only. ``acl`` write is the power to make a management token: give it as
sparingly as management itself.
"""

from __future__ import annotations

import secrets
import uuid
from collections.abc import Mapping
from typing import TYPE_CHECKING

from aiohttp import web

from meshlet.api.access import TOKEN, Need
from meshlet.api.schemas import read_json
from meshlet.errors import ConfigError, Unauthenticated
from meshlet.security.acl import Policy, hash_secret, token_fields
from meshlet.state.commands import AclPolicyDelete, AclPolicySet, AclTokenCreate, AclTokenDelete

if TYPE_CHECKING:
    from meshlet.api.routes import Api, Handler


class AclRoutes:
    def __init__(self, api: Api) -> None:
        self.api = api

    def routes(self) -> list[tuple[str, str, Handler, Need]]:
        """Every route with what it needs (``access.py``)."""
        read, write = Need("acl"), Need("acl", "write")
        return [
            ("GET", "/v1/acl/tokens", self.tokens, read),
            ("POST", "/v1/acl/tokens", self.token_create, write),
            ("GET", "/v1/acl/tokens/{accessor}", self.token_get, read),
            ("DELETE", "/v1/acl/tokens/{accessor}", self.token_delete, write),
            ("GET", "/v1/acl/token/self", self.token_self, Need(None)),
            ("GET", "/v1/acl/policies", self.policies, read),
            ("POST", "/v1/acl/policies", self.policy_set, write),
            ("GET", "/v1/acl/policies/{name}", self.policy_get, read),
            ("DELETE", "/v1/acl/policies/{name}", self.policy_delete, write),
        ]

    async def tokens(self, request: web.Request) -> web.Response:
        table = self.api.sm.acl
        index = await self.api.block(request, lambda: table.index)
        return self.api.reply([table.tokens[a].to_dict() for a in sorted(table.tokens)],
                              index)

    async def token_get(self, request: web.Request) -> web.Response:
        table = self.api.sm.acl
        index = await self.api.block(request, lambda: table.index)
        return self.api.reply(table.get_token(request.match_info["accessor"]).to_dict(),
                              index)

    async def token_self(self, request: web.Request) -> web.Response:
        token = request.get(TOKEN)
        if token is None:  # the join token, or enforcement off: no token to show
            raise Unauthenticated("this request carries no ACL token", "token")
        return self.api.reply(token.to_dict(), self.api.sm.acl.index)

    async def token_create(self, request: web.Request) -> web.Response:
        body = await read_json(request)
        if not isinstance(body, Mapping):
            raise ConfigError("body: expected an object with policies (or management)",
                              "body")
        unknown = set(body) - {"description", "policies", "management", "node_identities"}
        if unknown:
            name = sorted(unknown)[0]
            raise ConfigError(f"{name}: unknown field", name)
        fields = token_fields(body)
        secret = secrets.token_urlsafe(32)
        result = await self.api.propose(AclTokenCreate(
            uuid.uuid4().hex, hash_secret(secret), fields["description"],
            fields["policies"], fields["management"], fields["node_identities"]))
        return self.api.reply({**result.value, "secret": secret}, result.index, status=201)

    async def token_delete(self, request: web.Request) -> web.Response:
        accessor = request.match_info["accessor"]
        result = await self.api.propose(AclTokenDelete(accessor))
        return self.api.reply({"deleted": accessor}, result.index)

    async def policies(self, request: web.Request) -> web.Response:
        table = self.api.sm.acl
        index = await self.api.block(request, lambda: table.index)
        return self.api.reply([table.policies[n].to_dict() for n in sorted(table.policies)],
                              index)

    async def policy_get(self, request: web.Request) -> web.Response:
        table = self.api.sm.acl
        index = await self.api.block(request, lambda: table.index)
        return self.api.reply(table.get_policy(request.match_info["name"]).to_dict(), index)

    async def policy_set(self, request: web.Request) -> web.Response:
        policy = Policy.from_dict(await read_json(request))
        result = await self.api.propose(AclPolicySet(
            policy.name, tuple(r.to_dict() for r in policy.rules), policy.description))
        return self.api.reply(result.value, result.index, status=201)

    async def policy_delete(self, request: web.Request) -> web.Response:
        name = request.match_info["name"]
        result = await self.api.propose(AclPolicyDelete(name))
        return self.api.reply({"deleted": name}, result.index)

"""Who may call which route: every ``/v1/`` route is registered here with what it
needs, and one middleware checks it before the handler runs (default deny).

A request carries an ACL token's secret as ``X-Meshlet-Token: T`` or
``Authorization: Bearer T``. Without one, or with one the cluster does not know: 401
``unauthenticated``; with a known one that lacks the right: 403 ``forbidden``.
Neither reaches the handler, so neither changes anything. Routes a server calls on
another while founding or joining a cluster also accept the cluster's join token
(``X-Meshlet-Join-Token``), and only those.

Names: a route names its resource from the path (``{key}``), from the state (an
instance's service), or in its body (the handler then calls ``require``). Lists are
filtered to what the token may read, as Consul's are (``visible``).
"""

from __future__ import annotations

import hmac
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import Any, TypeVar

from aiohttp import web

from meshlet.errors import Forbidden, NotLeader, Unauthenticated
from meshlet.security.acl import DENY_ALL, MANAGEMENT, Authorizer, Token, hash_secret
from meshlet.state.acl import AclTable

TOKEN_HEADER = "X-Meshlet-Token"
JOIN_TOKEN_HEADER = "X-Meshlet-Join-Token"
CREDENTIAL_HEADERS = (TOKEN_HEADER, "Authorization", JOIN_TOKEN_HEADER)
# Where a request keeps what its token may do, and the token.
AUTHORIZER = web.RequestKey("meshlet.authorizer", Authorizer)
TOKEN = web.RequestKey("meshlet.token", Token)
CACHE_SIZE = 1024
T = TypeVar("T")
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
NameOf = Callable[[web.Request], str]
NodeOf = Callable[[web.Request], "str | None"]


@dataclass(frozen=True)
class Need:
    """What a route needs: ``access`` (read or write) on ``kind`` resource named by
    ``name`` (a path parameter, or a function of the request). ``kind`` None: any
    known token. ``listing``: any known token, the handler shows only what it may read.
    ``in_body``: the handler names the resource and calls ``require``. ``join``: the
    cluster's join token suffices. ``node_of``: the node the resource is placed on
    (None: none, or no such resource); a token acting for that node suffices."""

    kind: str | None
    access: str = "read"
    name: str | NameOf = ""
    listing: bool = False
    in_body: bool = False
    join: bool = False
    node_of: NodeOf | None = None

    def name_in(self, request: web.Request) -> str:
        if callable(self.name):
            return self.name(request)
        return request.match_info[self.name] if self.name else ""


def secret_of(headers: Any) -> str | None:
    """The token's secret from ``X-Meshlet-Token`` or ``Authorization: Bearer``."""
    secret = headers.get(TOKEN_HEADER)
    if secret is None:
        scheme, _, rest = headers.get("Authorization", "").partition(" ")
        secret = rest.strip() if scheme.lower() == "bearer" else None
    return secret or None


class Guard:
    """The route table of needs and the token cache, over the replicated ACL table.

    Resolved tokens are cached by secret while the ACL table's index stays the same,
    so a request with a known token costs one dict lookup, not a hash and a compile.
    ``enforce`` False (a benchmark's baseline only) lets every request through."""

    def __init__(self, acl: Callable[[], AclTable], join_token: str | None = None,
                 enforce: bool = True, is_leader: Callable[[], bool] = lambda: True
                 ) -> None:
        self.acl = acl
        self.is_leader = is_leader
        self.join_token = join_token
        self.enforce = enforce
        self.needs: dict[tuple[str, str], Need] = {}
        self.cache: dict[str, tuple[Token | None, Authorizer]] = {}
        self.cache_index = -1
        self.refused = {Unauthenticated.code: 0, Forbidden.code: 0}  # for /metrics

    def __repr__(self) -> str:
        return f"<Guard {len(self.needs)} routes, {len(self.cache)} tokens cached>"

    def add(self, router: web.UrlDispatcher, method: str, path: str, handler: Handler,
            need: Need) -> None:
        """Register a route together with what it needs."""
        route = router.add_get(path, handler) if method == "GET" else \
            router.add_route(method, path, handler)  # a GET answers HEAD too
        self.needs[(method, route.resource.canonical)] = need  # type: ignore[union-attr]

    def need_of(self, request: web.Request) -> Need | None:
        resource = request.match_info.route.resource
        if resource is None:
            return None
        method = "GET" if request.method == "HEAD" else request.method
        return self.needs.get((method, resource.canonical))

    def resolve(self, secret: str | None) -> tuple[Token | None, Authorizer]:
        """The token ``secret`` names and what it may do (None, DENY_ALL if unknown)."""
        if secret is None:
            return None, DENY_ALL
        table = self.acl()
        if table.index != self.cache_index or len(self.cache) >= CACHE_SIZE:
            self.cache.clear()
            self.cache_index = table.index
        found = self.cache.get(secret)
        if found is None:
            token = table.resolve(hash_secret(secret))
            found = self.cache[secret] = (token, table.authorizer(token))
        return found

    def authorize(self, secret: str | None, kind: str, name: str, access: str) -> None:
        """Raise Unauthenticated or Forbidden unless ``secret`` may do it."""
        if not self.enforce:
            return
        token, authorizer = self.resolve(secret)
        try:
            if token is None:
                raise unauthenticated(secret)
            check(authorizer, kind, name, access)
        except (Unauthenticated, Forbidden) as refusal:
            self.refused[refusal.code] += 1
            raise

    def joins(self, request: web.Request) -> bool:
        offered = request.headers.get(JOIN_TOKEN_HEADER)
        return (self.join_token is not None and offered is not None
                and hmac.compare_digest(offered.encode("utf-8", "surrogatepass"),
                                        self.join_token.encode()))

    @web.middleware
    async def middleware(self, request: web.Request, handler: Handler
                         ) -> web.StreamResponse:
        try:
            if not request.path.startswith("/v1/"):
                return await handler(request)  # /metrics: open, read-only
            if request.match_info.http_exception is not None:
                return await handler(request)  # no such route: aiohttp's 404/405
            need = self.need_of(request)
            if need is None:  # a route registered without its rule: default deny
                raise Forbidden(f"{request.method} {request.path}: no access rule",
                                "route")
            if not self.enforce or (need.join and self.joins(request)):
                request[AUTHORIZER] = MANAGEMENT
                return await handler(request)
            secret = secret_of(request.headers)
            token, authorizer = self.resolve(secret)
            if token is None:
                if secret is not None and secret.isascii() and not self.is_leader():
                    # Perhaps made a moment ago: the leader's state judges it. (A
                    # secret is URL-safe text: one that is not ASCII is no one's.)
                    raise NotLeader("this server does not know the token yet")
                raise unauthenticated(secret)
            if need.kind is not None and need.in_body:
                if not authorizer.allows_some(need.kind, need.access):
                    raise Forbidden(f"this token may not {need.access} any {need.kind}",
                                    need.kind)
            elif need.kind is not None and not need.listing and not (
                    need.node_of is not None and authorizer.nodes
                    and authorizer.acts_for(need.node_of(request))):
                check(authorizer, need.kind, need.name_in(request), need.access)
            request[AUTHORIZER] = authorizer
            request[TOKEN] = token
            return await handler(request)
        except (Unauthenticated, Forbidden) as refusal:
            self.refused[refusal.code] += 1
            raise


def unauthenticated(secret: str | None) -> Unauthenticated:
    if secret is None:
        return Unauthenticated("this request needs an ACL token: send it as "
                               "X-Meshlet-Token or Authorization: Bearer (the CLI: "
                               "--token or MESHLET_TOKEN)", "token")
    return Unauthenticated("the ACL token is not known to this cluster", "token")


def check(authorizer: Authorizer, kind: str, name: str, access: str) -> None:
    """Raise Forbidden unless ``authorizer`` may ``access`` the resource."""
    if not authorizer.allows(kind, name, access):
        raise Forbidden(f"this token may not {access} {kind} {name!r}", kind)


def require(request: web.Request, kind: str, name: str, access: str) -> None:
    """For a route whose resource is named in its body: raise Forbidden unless the
    request's token may ``access`` it."""
    check(request.get(AUTHORIZER, DENY_ALL), kind, name, access)


def visible(request: web.Request, kind: str, items: Iterable[T],
            name_of: Callable[[T], str],
            node_of: Callable[[T], str] | None = None) -> list[T]:
    """The items of a list the request's token may read (or, given ``node_of``, that
    are placed on a node it acts for)."""
    authorizer: Authorizer = request.get(AUTHORIZER, DENY_ALL)
    if authorizer.management:
        return list(items)
    return [i for i in items if authorizer.allows(kind, name_of(i), "read")
            or (node_of is not None and authorizer.acts_for(node_of(i)))]

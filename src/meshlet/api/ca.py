"""The CA API: the trust bundle, workload certificates from CSRs, root rotation.

``POST /v1/ca/sign`` takes a CSR and the service (and namespace) it is for, and needs
``service`` write on that service, as Consul's leaf certificates need
``service:write``: whoever may register a service may prove to be it. The key stays
with the caller; the leaf names only the identity asked for (``security/identity.py``).
Any server signs, with the root the state says is active: every server derives that
root's key from the join token. ``POST /v1/ca/rotate`` (``operator`` write) makes the
next generation active, through the leader.
"""

from __future__ import annotations

import datetime
import hashlib
from typing import TYPE_CHECKING, Any

from aiohttp import web
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from pydantic import Field

from meshlet.api.access import Need, require
from meshlet.api.schemas import Body, parse_body, read_json
from meshlet.errors import Unavailable
from meshlet.security import ca, identity
from meshlet.state.ca import CaRootRotate, RootEntry

if TYPE_CHECKING:
    from meshlet.api.routes import Api, Handler


class SignBody(Body):
    csr: str = Field(min_length=1, max_length=identity.MAX_CSR)
    service: str = Field(min_length=1, max_length=63)
    namespace: str = Field(default=identity.DEFAULT_NAMESPACE, min_length=1, max_length=63)


def root_view(entry: RootEntry) -> dict[str, Any]:
    cert = x509.load_pem_x509_certificate(entry.cert.encode())
    return {"generation": entry.generation, "active": entry.active,
            "not_after": cert.not_valid_after_utc.isoformat(),
            "fingerprint": hashlib.sha256(
                cert.public_bytes(serialization.Encoding.DER)).hexdigest(),
            "rotated_at": entry.rotated_at, "cert": entry.cert,
            "cross_signed": entry.cross_signed}


def now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


class CaRoutes:
    def __init__(self, api: Api) -> None:
        self.api = api
        self._roots: ca.Roots | None = None

    def routes(self) -> list[tuple[str, str, Handler, Need]]:
        """Every route with what it needs (``access.py``)."""
        return [
            ("GET", "/v1/ca/roots", self.roots, Need(None)),
            ("POST", "/v1/ca/sign", self.sign, Need("service", "write", in_body=True)),
            ("POST", "/v1/ca/rotate", self.rotate, Need("operator", "write")),
        ]

    def keys(self) -> ca.Roots:
        """The roots this server derives; raises Unavailable if it has no join token."""
        if self._roots is None:
            if not self.api.ca_token:
                raise Unavailable("this server has no CA: it was started without a "
                                  "join token")
            self._roots = ca.Roots(self.api.ca_token)
        return self._roots

    def active(self) -> RootEntry:
        entry = self.api.sm.ca.active()
        if entry is None:
            raise Unavailable("the cluster's CA root is not recorded yet (no leader has "
                              "been elected?)")
        return entry

    async def roots(self, request: web.Request) -> web.Response:
        table = self.api.sm.ca
        index = await self.api.block(request, lambda: table.index)
        active = table.active()
        return self.api.reply({
            "trust_domain": identity.trust_domain(table.cluster) if table.cluster else "",
            "active_generation": active.generation if active is not None else None,
            "roots": [root_view(r) for r in table.roots],
            "bundle": table.bundle()}, index)

    async def sign(self, request: web.Request) -> web.Response:
        body = parse_body(SignBody, await read_json(request))
        require(request, "service", body.service, "write")
        csr = identity.load_csr(body.csr)
        entry = self.active()
        root = self.keys().get(entry.generation)
        if root.pem.decode() != entry.cert:
            raise Unavailable("this server's join token does not make the cluster's "
                              f"active root (generation {entry.generation})")
        spiffe_id = identity.workload_id(root.cluster, body.service, body.namespace)
        leaf = identity.issue_workload(root, csr, spiffe_id, now())
        chain = [identity.pem(c) for c in self.keys().presented(entry.generation)]
        return self.api.reply({
            "spiffe_id": str(spiffe_id), "generation": entry.generation,
            "cert": identity.pem(leaf), "chain": chain,
            "not_after": leaf.not_valid_after_utc.isoformat(),
            "roots": self.api.sm.ca.bundle()}, self.api.sm.ca.index)

    async def rotate(self, request: web.Request) -> web.Response:
        entry = self.active()
        keys = self.keys()
        new = keys.get(entry.generation + 1)
        result = await self.api.propose(CaRootRotate(
            new.generation, new.pem.decode(), identity.pem(keys.cross_signed(new.generation)),
            now().isoformat()))
        return self.api.reply({"active_generation": new.generation,
                               "roots": [root_view(RootEntry.from_dict(r))
                                         for r in result.value["roots"]]}, result.index)

"""A server's side of the cluster CA: its credentials made current at start, the
mutual TLS its Raft transport speaks, and the root recorded in the replicated state
by the first leader (and checked against the join token at every start)."""

from __future__ import annotations

import asyncio
import datetime
import logging
import socket
import ssl
from pathlib import Path

from meshlet.errors import ConfigError, MeshletError
from meshlet.private_files import read_or_create_secret
from meshlet.raft.transport import TransportTls
from meshlet.security import ca
from meshlet.security.credentials import (
    ServerCredentials,
    ensure_server_credentials,
    peer_server_id,
)
from meshlet.server.raft_node import RaftServerNode
from meshlet.state.ca import CaRootSet

log = logging.getLogger(__name__)


class ServerTls:
    """A server's credentials and the TLS contexts made from them, which it keeps
    current: a certificate nearing its end is issued again and loaded into every
    context, so connections made after that use it (a running server's certificate
    never expires under it)."""

    def __init__(self, data_dir: Path, join_token: str, server_id: str,
                 hosts: list[str]) -> None:
        """Raises ConfigError, OSError."""
        self.data_dir, self.join_token = data_dir, join_token
        self.server_id, self.hosts = server_id, hosts
        self.creds = self.current()
        self.contexts: list[ssl.SSLContext] = []

    def __repr__(self) -> str:
        return f"<ServerTls {self.creds!r} contexts={len(self.contexts)}>"

    @classmethod
    def make(cls, data_dir: Path, server_id: str, api_host: str,
             raft: tuple[str, int] | None, join_token: str | None,
             https: bool) -> ServerTls | None:
        """When the server needs credentials (Raft between servers, an API over
        HTTPS), its own, made current; else None. A server alone that serves HTTPS
        with no join token given keeps one of its own in ``join.token``."""
        if raft is None and not https:
            return None
        if not join_token:
            join_token = read_or_create_secret(data_dir / "join.token")
        hosts = [api_host] + ([raft[0]] if raft is not None else [])
        if any(h in ("0.0.0.0", "::", "") for h in hosts):
            hosts += local_addresses()
        return cls(data_dir, join_token, server_id, hosts)

    def current(self, now: datetime.datetime | None = None) -> ServerCredentials:
        return ensure_server_credentials(self.data_dir, self.join_token, self.server_id,
                                         self.hosts, now)

    def raft(self) -> TransportTls:
        creds, cluster = self.creds, self.creds.cluster
        return TransportTls(self.kept(creds.server_context()),
                            self.kept(creds.client_context()), creds.server_name,
                            lambda cert: peer_server_id(cert, cluster))

    def api(self) -> ssl.SSLContext:
        return self.kept(self.creds.api_context())

    def kept(self, context: ssl.SSLContext) -> ssl.SSLContext:
        self.contexts.append(context)
        return context

    def renew(self, now: datetime.datetime | None = None) -> bool:
        """Issue the certificate again if it is due at ``now``; returns whether it was."""
        before = self.creds.cert_file.read_bytes()
        self.creds = self.current(now)
        if self.creds.cert_file.read_bytes() == before:
            return False
        for context in self.contexts:
            context.load_cert_chain(self.creds.cert_file, self.creds.key_file)
        log.info("renewed this server's certificate")
        return True

    async def renew_forever(self, interval: float = 3600.0) -> None:
        while True:
            await asyncio.sleep(interval)
            try:
                self.renew()
            except (OSError, ConfigError) as exc:
                log.error("cannot renew this server's certificate: %s", exc)


def local_addresses() -> list[str]:
    """This host's addresses as its name resolves (a wildcard listener's certificate
    names them, since clients reach it on one of them)."""
    try:
        infos = socket.getaddrinfo(socket.gethostname(), None)
    except OSError:
        return []
    return sorted({str(info[4][0]) for info in infos})


def check_root(node: RaftServerNode, join_token: str) -> None:
    """Refuse to start with a join token that is not the one this cluster was founded
    with: its root would not be the one recorded in the state."""
    recorded = node.machine.ca.root
    if recorded and recorded != ca.derive_root(join_token).pem.decode():
        raise ConfigError("the join token is not this cluster's: the CA root it makes is "
                          "not the one recorded in the data directory", "join_token")


async def record_root(node: RaftServerNode, join_token: str, interval: float = 0.5) -> None:
    """Runs until the cluster's root is in the state: once this server leads, it
    proposes it (the same bytes on every server, so whichever leader does it first)."""
    root = ca.derive_root(join_token)
    while not node.machine.ca.root:
        if node.is_leader:
            try:
                await node.propose(CaRootSet(root.cluster, root.pem.decode()))
                log.info("recorded the cluster's CA root (%s)", root.cluster)
            except MeshletError as exc:
                log.debug("cannot record the CA root yet: %s", exc)
        await asyncio.sleep(interval)

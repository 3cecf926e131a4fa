"""A server's side of the cluster CA: its credentials made current at start and kept
current with the state's roots, the mutual TLS its Raft transport speaks, the founding
root recorded in the replicated state by the first leader (and checked against the
join token at every start), and old roots pruned by the leader."""

from __future__ import annotations

import asyncio
import datetime
import json
import logging
import socket
import ssl
from pathlib import Path

from meshlet.errors import ConfigError, MeshletError
from meshlet.private_files import read_or_create_secret
from meshlet.raft.transport import TransportTls
from meshlet.security import ca, identity
from meshlet.security.credentials import (
    ServerCredentials,
    ensure_server_credentials,
    peer_server_id,
    write_private,
)
from meshlet.server.raft_node import RaftServerNode
from meshlet.state.ca import CaRootPrune, CaRootSet

log = logging.getLogger(__name__)


class ServerTls:
    """A server's credentials and the TLS contexts made from them, which it keeps
    current: a certificate nearing its end, or from a root that is no longer the
    active one, is issued again and loaded into every context, so connections made
    after that use it (a running server's certificate never expires under it). Every
    root the state trusts is trusted here; a root pruned from the state is dropped
    by making the Raft contexts again (a context cannot forget a root)."""

    def __init__(self, data_dir: Path, join_token: str, server_id: str,
                 hosts: list[str]) -> None:
        """Raises ConfigError, OSError."""
        self.data_dir, self.join_token = data_dir, join_token
        self.server_id, self.hosts = server_id, hosts
        self.roots = ca.Roots(join_token)
        self.generation, self.trusted = load_generations(data_dir)
        self.creds = self.current()
        self.contexts: list[ssl.SSLContext] = []
        self.transport: TransportTls | None = None

    def __repr__(self) -> str:
        return (f"<ServerTls {self.creds!r} generation={self.generation} "
                f"trusted={self.trusted} contexts={len(self.contexts)}>")

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
                                         self.hosts, now, self.generation, self.trusted,
                                         self.roots)

    def raft(self) -> TransportTls:
        if self.transport is None:
            self.transport = self.make_transport()
        return self.transport

    def make_transport(self) -> TransportTls:
        creds, cluster = self.creds, self.creds.cluster
        return TransportTls(creds.server_context(), creds.client_context(),
                            creds.server_name, lambda cert: peer_server_id(cert, cluster))

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
        self.reload(trust_shrank=False)
        log.info("renewed this server's certificate")
        return True

    def adopt(self, generations: tuple[int, tuple[int, ...]],
              now: datetime.datetime | None = None) -> bool:
        """Follow the state's roots: issue this server's certificate from the active
        generation and trust every trusted one. Returns whether anything changed.
        A state behind the generation this server already follows (replaying its log
        after a restart) is not followed back: generations only go forward."""
        generation, trusted = generations
        if generation < self.generation or (generation, trusted) == (self.generation,
                                                                      self.trusted):
            return False
        shrank = not set(self.trusted) <= set(trusted)
        self.generation, self.trusted = generation, trusted
        self.creds = self.current(now)
        save_generations(self.data_dir, generation, trusted)
        self.reload(shrank)
        log.info("this server's certificate now comes from root generation %d; trusted "
                 "generations: %s", generation, ", ".join(map(str, trusted)))
        return True

    def reload(self, trust_shrank: bool) -> None:
        """Load the certificate and the trust bundle into every context held (new
        connections use them); when a root was pruned, make the Raft contexts again."""
        for context in self.contexts:
            context.load_cert_chain(self.creds.cert_file, self.creds.key_file)
        if self.transport is None:
            return
        if trust_shrank:
            fresh = self.make_transport()
            self.transport.server, self.transport.client = fresh.server, fresh.client
            return
        for context in (self.transport.server, self.transport.client):
            context.load_cert_chain(self.creds.cert_file, self.creds.key_file)
            context.load_verify_locations(cafile=str(self.creds.ca_file))

    async def renew_forever(self, interval: float = 3600.0) -> None:
        while True:
            await asyncio.sleep(interval)
            try:
                self.renew()
            except (OSError, ConfigError) as exc:
                log.error("cannot renew this server's certificate: %s", exc)

    async def follow_roots(self, node: RaftServerNode, wait: float = 30.0) -> None:
        """Runs while the server does: adopt the state's roots whenever they change
        (a rotation, a prune; on every server, as each applies it)."""
        index = -1
        while True:
            index = await node.wait_for_change(lambda: node.machine.ca.index, index, wait)
            try:
                self.adopt(node.machine.ca.generations())
            except (OSError, ConfigError) as exc:
                log.error("cannot follow the CA's roots: %s", exc)


GENERATIONS_FILE = "tls/generations.json"


def load_generations(data_dir: Path) -> tuple[int, tuple[int, ...]]:
    """The root generations this server last followed: after a restart, it shows a
    certificate its peers still trust (the old root may be pruned) before its own
    state has caught up. (0, (0,)) the first time."""
    try:
        body = json.loads((data_dir / GENERATIONS_FILE).read_text())
        active, trusted = int(body["active"]), tuple(int(g) for g in body["trusted"])
    except FileNotFoundError:
        return 0, (0,)
    except (ValueError, KeyError, TypeError) as exc:
        log.warning("ignoring %s: %s", data_dir / GENERATIONS_FILE, exc)
        return 0, (0,)
    return active, trusted


def save_generations(data_dir: Path, active: int, trusted: tuple[int, ...]) -> None:
    write_private(data_dir / GENERATIONS_FILE,
                  json.dumps({"active": active, "trusted": list(trusted)}).encode())


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


async def record_root(node: RaftServerNode, join_token: str, interval: float = 0.1) -> None:
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
        await node.wait_for_change(lambda: node.machine.index, node.machine.index,
                                   interval)


LONGEST_LEAF = max(ca.SERVER_LIFETIME, identity.WORKLOAD_LIFETIME)


async def prune_roots(node: RaftServerNode, interval: float = 3600.0,
                      longest_leaf: datetime.timedelta = LONGEST_LEAF) -> None:
    """Runs while the server does: as leader, drop from the trust bundle every root
    that stopped issuing more than ``longest_leaf`` ago (every leaf it issued has
    expired, or was issued again by a newer root long before)."""
    while True:
        if node.is_leader:
            now = datetime.datetime.now(datetime.UTC)
            for generation in node.machine.ca.prunable(now, longest_leaf):
                try:
                    await node.propose(CaRootPrune(generation))
                    log.info("pruned CA root generation %d from the trust bundle",
                             generation)
                except MeshletError as exc:
                    log.debug("cannot prune CA root generation %d yet: %s", generation,
                              exc)
        await asyncio.sleep(interval)

"""A server's side of the cluster CA: its credentials made current at start, the
mutual TLS its Raft transport speaks, and the root recorded in the replicated state
by the first leader (and checked against the join token at every start)."""

from __future__ import annotations

import asyncio
import logging
import socket
from pathlib import Path

from meshlet.errors import ConfigError, MeshletError
from meshlet.raft.transport import TransportTls
from meshlet.security import ca
from meshlet.security.credentials import (
    ServerCredentials,
    ensure_server_credentials,
    peer_server_id,
)
from meshlet.security.secret_file import read_or_create_secret
from meshlet.server.raft_node import RaftServerNode
from meshlet.state.ca import CaRootSet

log = logging.getLogger(__name__)


def credentials(data_dir: Path, server_id: str, api_host: str,
                raft: tuple[str, int] | None, join_token: str | None,
                https: bool) -> tuple[ServerCredentials | None, str | None]:
    """This server's credentials, made current, when it needs any: for Raft between
    servers, and for an API served over HTTPS. A server alone that serves HTTPS with
    no join token given keeps one of its own in ``join.token``. Returns them and the
    join token they come from. Raises ConfigError, OSError."""
    if raft is None and not https:
        return None, join_token
    if not join_token:
        join_token = read_or_create_secret(data_dir / "join.token")
    hosts = [api_host] + ([raft[0]] if raft is not None else [])
    if any(h in ("0.0.0.0", "::", "") for h in hosts):
        hosts += local_addresses()
    return ensure_server_credentials(data_dir, join_token, server_id, hosts), join_token


def local_addresses() -> list[str]:
    """This host's addresses as its name resolves (a wildcard listener's certificate
    names them, since clients reach it on one of them)."""
    try:
        infos = socket.getaddrinfo(socket.gethostname(), None)
    except OSError:
        return []
    return sorted({str(info[4][0]) for info in infos})


def raft_tls(creds: ServerCredentials) -> TransportTls:
    cluster = creds.cluster
    return TransportTls(creds.server_context(), creds.client_context(), creds.server_name,
                        lambda cert: peer_server_id(cert, cluster))


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

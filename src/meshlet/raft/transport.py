"""Raft messages over TCP: one outbound connection per peer, reconnected with backoff,
behind a bounded queue (Raft tolerates loss, so a full queue drops the oldest). The
peer set follows the cluster's membership (``set_peers``).

Between servers the connections are mutual TLS (``TransportTls``): each side shows a
certificate from the cluster's root and checks the other's; a connection without a
valid one is refused before a byte of it is read, and every frame on an accepted one
must come from the server its certificate names. Without ``tls`` the frames travel in
the clear: only tests and the benchmark's baseline do that.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass

from meshlet.backoff import Backoff
from meshlet.raft.codec import encode
from meshlet.raft.core import Message, NodeId
from meshlet.raft.inbound import HANDSHAKE_TIMEOUT, Inbound

log = logging.getLogger(__name__)
QUEUE_LIMIT = 4096


@dataclass
class TransportTls:
    """Mutual TLS between servers: ``server`` accepts and ``client`` connects (each
    requires the other's certificate), ``server_name`` is the name every server's
    certificate holds, and ``peer_id`` reads the server id out of a peer's certificate
    (as ``SSLObject.getpeercert()`` gives it), or None if it names none. The contexts
    are read at each connection, so the server may replace them (a pruned root)."""

    server: ssl.SSLContext
    client: ssl.SSLContext
    server_name: str
    peer_id: Callable[[object], NodeId | None]


class Peer:
    def __init__(self, node_id: NodeId, host: str, port: int,
                 tls: TransportTls | None = None) -> None:
        self.id = node_id
        self.host = host
        self.port = port
        self.tls = tls
        self.queue: deque[bytes] = deque(maxlen=QUEUE_LIMIT)
        self.wakeup = asyncio.Event()
        self.task: asyncio.Task[None] | None = None

    def __repr__(self) -> str:
        return f"<Peer {self.id} {self.host}:{self.port} queued={len(self.queue)}>"

    async def run(self) -> None:
        backoff = Backoff(base=0.05, cap=1.0)
        while True:
            try:
                writer = await self.connect()
            except (OSError, TimeoutError) as exc:
                log.debug("cannot reach raft peer %s at %s:%d: %s", self.id, self.host,
                          self.port, exc)
                await asyncio.sleep(backoff.next_delay())
                continue
            backoff.reset()
            try:
                while True:
                    if not self.queue:
                        self.wakeup.clear()
                        await self.wakeup.wait()
                    batch = b"".join(self.queue)  # pipelined and batched
                    self.queue.clear()
                    writer.write(batch)
                    await writer.drain()
            except (OSError, ConnectionError):
                pass
            finally:
                writer.close()

    async def connect(self) -> asyncio.StreamWriter:
        """A connection to the peer; over TLS, only to the server this peer is.
        Raises OSError (ssl.SSLError among them) or TimeoutError."""
        tls = self.tls
        if tls is None:
            _, writer = await asyncio.open_connection(self.host, self.port)
            return writer
        _, writer = await asyncio.open_connection(
            self.host, self.port, ssl=tls.client, server_hostname=tls.server_name,
            ssl_handshake_timeout=HANDSHAKE_TIMEOUT)
        named = tls.peer_id(writer.get_extra_info("peercert"))
        if named != self.id:
            writer.close()
            raise ConnectionError(f"its certificate is for server {named!r}, not {self.id!r}")
        return writer


class TcpTransport:
    """The driver's ``Transport`` between servers."""

    def __init__(self, node_id: NodeId, listen: tuple[str, int] | None,
                 dropped: Counter[str] | None = None, tls: TransportTls | None = None
                 ) -> None:
        """``dropped`` counts what is refused (a connection without a valid
        certificate, a frame that is malformed or claims another sender), by reason."""
        self.id = node_id
        self.tls = tls
        self.dropped: Counter[str] = dropped if dropped is not None else Counter()
        self.listen = listen
        self.peers: dict[NodeId, Peer] = {}
        self.on_message: Callable[[Message], None] = lambda m: None
        self.server: asyncio.AbstractServer | None = None
        self.connections: set[Inbound] = set()

    def __repr__(self) -> str:
        tls = "mtls" if self.tls is not None else "plaintext"
        return (f"<TcpTransport {self.id} {tls} listen={self.listen} "
                f"peers={sorted(self.peers)}>")

    async def start(self, deliver: Callable[[Message], None]) -> None:
        """Listen for peers (unless this is a server alone, with no address); every
        message read is handed to ``deliver``."""
        self.on_message = deliver
        if self.listen is not None:
            self.server = await asyncio.get_running_loop().create_server(
                lambda: Inbound(self.tls, self.on_message, self.refuse, self.connections),
                *self.listen, reuse_address=True)

    def set_peers(self, peers: dict[NodeId, tuple[str, int]]) -> None:
        """Connect to new or moved peers, disconnect from departed ones."""
        for node_id in list(self.peers):
            peer = self.peers[node_id]
            if peers.get(node_id) != (peer.host, peer.port):
                if peer.task is not None:
                    peer.task.cancel()
                del self.peers[node_id]
        for node_id, (host, port) in peers.items():
            if node_id != self.id and node_id not in self.peers:
                peer = Peer(node_id, host, port, self.tls)
                peer.task = asyncio.get_running_loop().create_task(peer.run())
                self.peers[node_id] = peer

    def send(self, m: Message) -> None:
        peer = self.peers.get(m.to)
        if peer is not None:
            peer.queue.append(encode(m))
            peer.wakeup.set()

    def refuse(self, reason: str, what: str) -> None:
        self.dropped[reason] += 1
        count = self.dropped[reason]
        if count & (count - 1) == 0:  # the 1st, 2nd, 4th...: bounded log volume
            log.warning("raft: refused %s (%d so far)", what, count)

    async def stop(self) -> None:
        """Close every connection."""
        if self.server is not None:
            self.server.close()
        for connection in list(self.connections):
            connection.close()
        senders = [p.task for p in self.peers.values() if p.task]
        for task in senders:
            task.cancel()
        for task in senders:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task

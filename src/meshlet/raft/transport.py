"""Raft messages over TCP: one outbound connection per peer, reconnected with backoff,
behind a bounded queue (Raft tolerates loss, so a full queue drops the oldest). The
peer set follows the cluster's membership (``set_peers``)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from collections.abc import Callable

from meshlet.backoff import Backoff
from meshlet.errors import ConfigError
from meshlet.raft.codec import FRAME, MAX_FRAME, decode, encode
from meshlet.raft.core import Message, NodeId

log = logging.getLogger(__name__)
QUEUE_LIMIT = 4096


class Peer:
    def __init__(self, node_id: NodeId, host: str, port: int) -> None:
        self.id = node_id
        self.host = host
        self.port = port
        self.queue: deque[bytes] = deque(maxlen=QUEUE_LIMIT)
        self.wakeup = asyncio.Event()
        self.task: asyncio.Task[None] | None = None

    def __repr__(self) -> str:
        return f"<Peer {self.id} {self.host}:{self.port} queued={len(self.queue)}>"

    async def run(self) -> None:
        backoff = Backoff(base=0.05, cap=1.0)
        while True:
            try:
                _, writer = await asyncio.open_connection(self.host, self.port)
            except OSError:
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


class TcpTransport:
    """The driver's ``Transport`` between servers."""

    def __init__(self, node_id: NodeId, listen: tuple[str, int] | None) -> None:
        self.id = node_id
        self.listen = listen
        self.peers: dict[NodeId, Peer] = {}
        self.on_message: Callable[[Message], None] = lambda m: None
        self.server: asyncio.Server | None = None
        self.readers: dict[asyncio.Task[None], asyncio.StreamWriter] = {}

    def __repr__(self) -> str:
        return f"<TcpTransport {self.id} listen={self.listen} peers={sorted(self.peers)}>"

    async def start(self, deliver: Callable[[Message], None]) -> None:
        """Listen for peers (unless this is a server alone, with no address); every
        message read is handed to ``deliver``."""
        self.on_message = deliver
        if self.listen is not None:
            self.server = await asyncio.start_server(self.accept, *self.listen,
                                                     reuse_address=True)

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
                peer = Peer(node_id, host, port)
                peer.task = asyncio.get_running_loop().create_task(peer.run())
                self.peers[node_id] = peer

    def send(self, m: Message) -> None:
        peer = self.peers.get(m.to)
        if peer is not None:
            peer.queue.append(encode(m))
            peer.wakeup.set()

    async def accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        if task is not None:
            self.readers[task] = writer
        try:
            while True:
                header = await reader.readexactly(FRAME.size)
                (length,) = FRAME.unpack(header)
                if length > MAX_FRAME:
                    raise ConfigError(f"raft frame of {length} bytes is too large")
                self.on_message(decode(await reader.readexactly(length)))
        except (asyncio.IncompleteReadError, ConnectionError, ConfigError) as exc:
            if isinstance(exc, ConfigError):
                log.warning("dropping raft connection: %s", exc)
        finally:
            writer.close()
            if task is not None:
                self.readers.pop(task, None)

    async def stop(self) -> None:
        """Close every connection. Readers end at the closed socket rather than being
        cancelled: asyncio reports a cancelled connection handler as an error."""
        if self.server is not None:
            self.server.close()
        for writer in self.readers.values():
            writer.close()
        senders = [p.task for p in self.peers.values() if p.task]
        for task in senders:
            task.cancel()
        for task in [*senders, *self.readers]:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task

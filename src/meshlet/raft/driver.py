"""Runs one Raft node for real: ticks on a timer, storage on disk, transport on TCP.

For every Ready, in order: persist (fsync), send, apply, advance. A proposal's future
resolves with the apply function's result once its entry is applied here, or fails
with NotLeader if leadership is lost before then.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Callable
from pathlib import Path
from typing import Any

from meshlet.errors import NotLeader
from meshlet.raft.core import Entry, Message, NotLeaderError, RaftNode, Role
from meshlet.raft.storage import RaftStorage
from meshlet.raft.transport import Transport

log = logging.getLogger(__name__)


class RaftDriver:
    def __init__(self, node_id: str, peers: dict[str, tuple[str, int]], directory: Path,
                 apply: Callable[[Entry], Any], tick_interval: float = 0.05,
                 election_ticks: int = 10) -> None:
        self.id = node_id
        self.peers = peers
        self.storage = RaftStorage(directory)
        self.apply = apply
        self.tick_interval = tick_interval
        self.election_ticks = election_ticks
        self.node: RaftNode | None = None
        self.transport = Transport(node_id, peers[node_id], peers, self.receive)
        self.waiting: dict[int, tuple[int, asyncio.Future[Any]]] = {}
        self.ticker: asyncio.Task[None] | None = None

    def __repr__(self) -> str:
        return f"<RaftDriver {self.node!r}>"

    async def start(self) -> None:
        hard, entries = self.storage.load()
        self.node = RaftNode(self.id, tuple(sorted(self.peers)), random.Random(),
                             election_ticks=self.election_ticks, term=hard.term,
                             vote=hard.vote, log=entries, commit=hard.commit)
        await self.transport.start()
        self.ticker = asyncio.get_running_loop().create_task(self.tick_loop())

    async def stop(self) -> None:
        if self.ticker is not None:
            self.ticker.cancel()
        await self.transport.stop()
        self.storage.close()
        for _, future in self.waiting.values():
            if not future.done():
                future.set_exception(NotLeader("raft node stopped"))

    @property
    def is_leader(self) -> bool:
        return self.node is not None and self.node.role == Role.LEADER

    async def tick_loop(self) -> None:
        while True:
            await asyncio.sleep(self.tick_interval)
            assert self.node is not None
            self.node.tick()
            self.process()

    def receive(self, m: Message) -> None:
        if self.node is not None:
            self.node.step(m)
            self.process()

    async def propose(self, data: bytes) -> Any:
        """Commit ``data`` through Raft; returns what ``apply`` returned for it."""
        assert self.node is not None
        try:
            index = self.node.propose(data)
        except NotLeaderError as exc:
            raise NotLeader(f"not the leader; leader is {exc.leader}") from None
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self.waiting[index] = (self.node.term, future)
        self.process()
        return await future

    def process(self) -> None:
        node = self.node
        assert node is not None
        for _ in range(10):
            ready = node.ready()
            if ready.empty():
                break
            self.storage.save(ready.hard_state, ready.entries)   # 1. persist
            for m in ready.messages:                               # 2. send
                self.transport.send(m)
            for entry in ready.committed:                          # 3. apply
                result = self.apply(entry)
                waiter = self.waiting.pop(entry.index, None)
                if waiter is not None and not waiter[1].done():
                    if waiter[0] == entry.term:
                        waiter[1].set_result(result)
                    else:  # another leader's entry took this index
                        waiter[1].set_exception(NotLeader("leadership changed"))
            node.advance(ready)                                    # 4. advance
        if node.role != Role.LEADER:
            for index, (term, future) in list(self.waiting.items()):
                if term < node.term and not future.done():
                    future.set_exception(NotLeader(
                        "leadership lost before commit; the write may still commit"))
                    del self.waiting[index]

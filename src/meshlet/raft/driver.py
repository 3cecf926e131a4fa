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
        self.reads: dict[int, asyncio.Future[int]] = {}
        self.read_counter = 0
        self.applied_changed = asyncio.Event()
        self.role_changed = asyncio.Event()
        self.scheduled = False
        self.leader_changes = 0
        self.last_leader: str | None = None
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

    async def hand_over(self, timeout: float = 2.0, to: str | None = None) -> str | None:
        """Pass leadership to ``to`` (default: the most caught-up follower), e.g. on a
        clean shutdown, so the cluster does not wait out an election timeout. Returns
        the id it went to, or None if this node was not leader or it did not happen."""
        node = self.node
        if node is None or node.role != Role.LEADER or len(node.peers) < 2:
            return None
        target = to or max((p for p in node.peers if p != self.id),
                           key=lambda p: (node.progress[p].match, p))
        node.transfer_leadership(target)
        self.process()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while node.role == Role.LEADER and loop.time() < deadline:
            self.role_changed.clear()
            try:
                await asyncio.wait_for(self.role_changed.wait(), deadline - loop.time())
            except TimeoutError:
                break
        return target if node.role != Role.LEADER else None

    async def stop(self) -> None:
        await self.hand_over()
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
        self.process_soon()
        return await future

    def process_soon(self) -> None:
        """Group commit: proposals made in the same turn of the event loop share one
        Ready, so one fsync and one message per peer carry all of them."""
        if not self.scheduled:
            self.scheduled = True
            asyncio.get_running_loop().call_soon(self.process_scheduled)

    def process_scheduled(self) -> None:
        self.scheduled = False
        self.process()

    async def read_index(self) -> int:
        """Wait until a linearizable read may be served here; returns its index.
        Raises NotLeader on a follower or when leadership is lost meanwhile."""
        assert self.node is not None
        self.read_counter += 1
        context = self.read_counter
        try:
            self.node.read_index(context)
        except NotLeaderError as exc:
            raise NotLeader(f"not the leader; leader is {exc.leader}") from None
        future: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        self.reads[context] = future
        self.process()
        index = await future
        while self.node.applied < index:
            self.applied_changed.clear()
            await self.applied_changed.wait()
        return index

    def last_contact(self) -> float | None:
        """Seconds since this node last heard from a leader (0 on the leader); None if
        it knows of none."""
        node = self.node
        if node is None or node.leader is None:
            return None
        return 0.0 if node.role == Role.LEADER else node.elapsed * self.tick_interval

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
            for context, index in ready.reads:
                read = self.reads.pop(context, None)
                if read is not None and not read.done():
                    read.set_result(index)
            node.advance(ready)                                    # 4. advance
            if node.leader is not None and node.leader != self.last_leader:
                self.leader_changes += 1
                self.last_leader = node.leader
            if ready.committed:
                self.applied_changed.set()
        if node.role != Role.LEADER:
            self.role_changed.set()
            for read in self.reads.values():
                if not read.done():
                    read.set_exception(NotLeader("leadership lost during a read"))
            self.reads.clear()
            for index, (term, future) in list(self.waiting.items()):
                if term < node.term and not future.done():
                    future.set_exception(NotLeader(
                        "leadership lost before commit; the write may still commit"))
                    del self.waiting[index]

"""A deterministic in-memory Raft cluster that runs the real ``RaftDriver`` (persist,
send, apply, advance, snapshots, proposals' futures) over ``MemoryStorage`` and
``MemoryTransport``: a seeded network that drops, duplicates, reorders and
partitions; servers that crash and restart from what they persisted, take snapshots
and compact their logs; and membership that grows and shrinks one server at a time.
``spares`` are servers that start empty, outside the cluster, until added.

Every message is checked as its driver sends it: what it promises must already be in
the sender's storage (``promises``), as a crash right then would leave it. A server
may also be doomed to crash right after one of its next sends, in the middle of its
driver's ``process()`` (the network raises ``Crashed`` out of the send), so that it
restarts from a storage saved but not yet applied or advanced.

It runs inside an event loop (the driver makes its futures there) but never waits on
it: every step ticks a driver or delivers it a message and then calls its
``process()`` at once, so the loop's own callbacks, drained by ``close()``, find
nothing left to do. The caller ticks (``tick_interval=None``), so no timer runs.
"""

from __future__ import annotations

import asyncio
import random
from contextlib import suppress
from typing import Any

from meshlet.errors import ConfigError, NotLeader
from meshlet.raft.core import CONFIG, Entry, Message, RaftNode, Role, config_members
from meshlet.raft.driver import RaftDriver
from meshlet.raft.memory import MemoryNetwork, MemoryStorage, MemoryTransport
from tests.sim.promises import Promises

NEVER = 1 << 62  # snapshot_every: the simulation decides when to snapshot


class SafetyViolation(AssertionError):
    pass


class Crashed(Exception):
    """Raised out of a driver's send: its server crashed right after sending."""


class SimCluster:
    """Build with ``await SimCluster.start(ids, seed, spares)``."""

    def __init__(self, ids: list[str], seed: int, spares: int = 0) -> None:
        self.founders = list(ids)
        self.ids = ids + [f"spare{i}" for i in range(spares)]
        self.rng = random.Random(seed)
        self.net = MemoryNetwork(self.sent)
        self.promises = Promises()
        self.broken: list[str] = []             # promises found broken, as sent
        self.doomed: tuple[str, int] | None = None  # crashes after that many more sends
        self.disks = {i: MemoryStorage() for i in self.ids}
        self.drivers: dict[str, RaftDriver] = {}
        # Each server's state machine: the entries it applied (config entries are the
        # driver's and never reach it) and the index it is at.
        self.applied: dict[str, list[Entry]] = {i: [] for i in self.ids}
        self.applied_index = dict.fromkeys(self.ids, 0)
        self.states: dict[bytes, tuple[int, list[Entry]]] = {}  # snapshot data -> state
        self.committed: dict[int, Entry] = {}   # the one true history, as applied
        self.newest_term = 0                    # of an entry in it
        self.leaders: dict[int, str] = {}       # term -> the leader seen for it
        self.cut: set[frozenset[str]] = set()   # pairs that cannot talk
        self.down: set[str] = set()
        self.proposed = 0
        self.proposals: list[tuple[bytes | None, asyncio.Future[Any]]] = []
        self.strangers = dict.fromkeys(self.ids, 0)  # frames dropped, when last asked

    @classmethod
    async def start(cls, ids: list[str], seed: int, spares: int = 0) -> SimCluster:
        sim = cls(ids, seed, spares)
        founders: dict[str, Any] = {i: {} for i in ids}
        for node_id in sim.ids:
            await sim.boot(node_id, founders if node_id in ids else None)
        return sim

    async def boot(self, node_id: str, founders: dict[str, Any] | None = None) -> None:
        driver = RaftDriver(
            node_id, self.disks[node_id], MemoryTransport(node_id, self.net),
            lambda entry: self.apply(driver, entry), lambda data: self.restore(driver, data),
            lambda: self.take_snapshot(driver), founders, snapshot_every=NEVER,
            tick_interval=None, rng=random.Random(self.rng.random()))
        self.drivers[node_id] = driver
        self.strangers[node_id] = 0
        with suppress(Crashed):  # right after a send in its first process()
            await driver.start()

    async def close(self) -> None:
        """The end of a run: every driver stops processing, and the callbacks they
        left on the loop run (and find nothing to do)."""
        for driver in self.drivers.values():
            driver.closing = True
        await asyncio.sleep(0)

    @property
    def nodes(self) -> dict[str, RaftNode]:
        """Each server's Raft core (that of its latest start)."""
        return {i: self.node(i) for i in self.ids}

    def node(self, node_id: str) -> RaftNode:
        node = self.drivers[node_id].node
        assert node is not None
        return node

    @property
    def network(self) -> list[Message]:
        """The messages in flight, in the order sent."""
        return self.net.in_flight

    # -- the state machine, as the driver calls it -------------------------------------

    def current(self, driver: RaftDriver) -> None:
        if self.drivers[driver.id] is not driver or driver.id in self.down:
            raise SafetyViolation(f"{driver.id} acted after it crashed")

    def apply(self, driver: RaftDriver, entry: Entry) -> int:
        self.current(driver)
        self.skip_to(driver, entry.index - 1)
        self.record(driver.id, entry)
        self.applied[driver.id].append(entry)
        self.applied_index[driver.id] = entry.index
        return entry.index

    def skip_to(self, driver: RaftDriver, index: int) -> None:
        """Entries after the last one applied up to ``index`` are config entries,
        which the driver does not apply; they are committed all the same."""
        last = self.applied_index[driver.id]
        assert driver.node is not None
        skipped = driver.node.entries(last + 1, index + 1)
        if index < last or len(skipped) != index - last or \
                any(e.kind != CONFIG for e in skipped):
            raise SafetyViolation(f"{driver.id} applied {index + 1} after {last}")
        for entry in skipped:
            self.record(driver.id, entry)
        self.applied_index[driver.id] = index

    def record(self, node_id: str, entry: Entry) -> None:
        seen = self.committed.setdefault(entry.index, entry)
        if seen != entry:
            raise SafetyViolation(f"state machine safety: {node_id} applied {entry} at "
                                  f"{entry.index}, another node applied {seen}")
        self.newest_term = max(self.newest_term, entry.term)

    def restore(self, driver: RaftDriver, data: bytes) -> None:
        self.current(driver)
        index, entries = self.states[data]
        self.applied[driver.id] = list(entries)
        self.applied_index[driver.id] = index

    def take_snapshot(self, driver: RaftDriver) -> bytes:
        """The state at the driver's applied index (config entries up to it included)."""
        self.current(driver)
        assert driver.node is not None
        self.skip_to(driver, driver.node.applied)
        data = f"state-{len(self.states)}".encode()
        self.states[data] = (driver.node.applied, list(self.applied[driver.id]))
        return data

    # -- the network, as the drivers send -----------------------------------------------

    def sent(self, m: Message) -> None:
        """A driver just sent ``m``: it must have stored what ``m`` promises. A doomed
        server crashes here, before the rest of its ``process()`` runs."""
        node = self.drivers[m.frm].node
        assert node is not None
        why = self.promises.broken(m, self.disks[m.frm], node)
        if why is not None:
            self.broken.append(f"{m.frm} sent {m} before persisting what it promises: {why}")
            raise SafetyViolation(self.broken[-1])
        if self.doomed is not None and self.doomed[0] == m.frm:
            node_id, sends = self.doomed
            self.doomed = (node_id, sends - 1) if sends > 1 else None
            if sends == 1:
                self.crash(node_id)
                raise Crashed(node_id)

    # -- driving ----------------------------------------------------------------------

    def process(self, node_id: str) -> None:
        with suppress(Crashed):  # part way, right after a send
            self.drivers[node_id].process()

    def deliver(self, index: int) -> None:
        m = self.network.pop(index)
        if frozenset((m.frm, m.to)) in self.cut:
            return
        if self.net.deliver(m):  # not if the receiver is down
            self.process(m.to)

    def tick(self, node_id: str) -> None:
        if node_id not in self.down:
            with suppress(Crashed):
                self.drivers[node_id].tick()

    def crash(self, node_id: str) -> None:
        """Lose everything not yet persisted, including messages in its outbox: the
        driver stops where it is, and its storage holds only what it saved."""
        self.down.add(node_id)
        self.drivers[node_id].closing = True
        self.net.detach(node_id)
        self.applied[node_id] = []
        self.applied_index[node_id] = 0

    async def restart(self, node_id: str) -> None:
        """A new driver over what the old one persisted; it re-applies what it knows
        committed at once."""
        self.down.discard(node_id)
        self.applied[node_id] = []
        self.applied_index[node_id] = 0
        await self.boot(node_id)
        self.rejoin(node_id)
        self.process(node_id)

    def compact(self, node_id: str) -> None:
        """Snapshot the node's applied state and fold its log into it."""
        self.drivers[node_id].compact()

    def live(self) -> list[RaftNode]:
        """The cores of the servers that are up."""
        return [d.node for i, d in self.drivers.items()
                if i not in self.down and d.node is not None]

    def leader(self) -> RaftNode | None:
        leaders = [n for n in self.live() if n.role == Role.LEADER]
        return max(leaders, key=lambda n: n.term) if leaders else None

    def submit(self, node_id: str, data: bytes) -> asyncio.Future[Any]:
        """Propose ``data`` through the driver (raises NotLeader) and process it."""
        future = self.drivers[node_id].submit(data)
        self.proposals.append((data, future))
        self.process(node_id)
        return future

    def change_members(self, node_id: str, members: dict[str, Any]) -> asyncio.Future[Any]:
        """Propose a configuration through the driver (raises NotLeader, ConfigError).
        A server it adds learns the members, as a server's ``--join`` does once the
        leader has added it: until then it drops every frame from a stranger."""
        before = config_members(self.node(node_id).config)
        future = self.drivers[node_id].submit_members(members)
        self.proposals.append((None, future))
        for added in set(members) - set(before):
            if added not in self.down:
                self.drivers[added].learn(members)
        self.process(node_id)
        return future

    def ask_for_members(self) -> None:
        """A server that dropped frames from strangers asks the servers it trusts for
        their members, as a server does (``RaftServerNode.refresh_members``)."""
        for node_id, driver in self.drivers.items():
            if node_id in self.down or driver.strangers() == self.strangers[node_id]:
                continue
            self.strangers[node_id] = driver.strangers()
            learnt: dict[str, Any] = {}
            for source in sorted(driver.trusted()):
                if source not in self.down and source in self.drivers and \
                        frozenset((node_id, source)) not in self.cut:
                    learnt.update(config_members(self.node(source).config))
            if learnt:
                driver.learn(learnt, keep=True)

    def rejoin(self, node_id: str) -> None:
        """A restarted server that its own log does not name asks to join again, as a
        server does at start: the answer is the newest configuration that names it."""
        if node_id in config_members(self.node(node_id).config):
            return
        configs = [(n.config_index, n.config) for i, n in self.nodes.items()
                   if i not in self.down and i != node_id]
        for _, config in sorted(configs, reverse=True):
            members = config_members(config)
            if node_id in members:
                self.drivers[node_id].learn(members)
                return

    def reconfigure(self) -> None:
        """The leader adds a server from outside its configuration or removes one."""
        leader = self.leader()
        if leader is None:
            return
        members = config_members(leader.config)
        outside = [i for i in self.ids if i not in members]
        if outside and (len(members) < 4 or self.rng.random() < 0.5):
            members[self.rng.choice(outside)] = {}
        elif len(members) > 2:
            del members[self.rng.choice(sorted(members))]
        try:
            self.change_members(leader.id, members)
        except (ConfigError, NotLeader):
            return

    def propose(self) -> None:
        leader = self.leader()
        if leader is not None:
            try:
                self.submit(leader.id, f"cmd-{self.proposed}".encode())
            except NotLeader:
                return
            self.proposed += 1

    async def random_step(self, reconfigure: bool = False) -> None:
        r = self.rng.random()
        live = [i for i in self.ids if i not in self.down]
        if r < 0.02 and live:
            self.compact(self.rng.choice(live))
        elif r < 0.03 and reconfigure:
            self.reconfigure()
        elif r < 0.45 and self.network:
            self.deliver(self.rng.randrange(len(self.network)))
        elif r < 0.50 and self.network:
            self.network.pop(self.rng.randrange(len(self.network)))          # drop
        elif r < 0.53 and self.network:
            self.network.append(self.rng.choice(self.network))               # duplicate
        elif r < 0.80 and live:
            self.tick(self.rng.choice(live))
        elif r < 0.88:
            self.propose()
        elif r < 0.92:
            a, b = self.rng.sample(self.ids, 2)
            pair = frozenset((a, b))
            self.cut.symmetric_difference_update({pair})                     # cut/heal
        elif r < 0.95 and len(self.down) + (self.doomed is not None) < \
                (len(self.founders) - 1) // 2 and live:
            victim = self.rng.choice(live)
            if self.rng.random() < 0.5:
                self.crash(victim)
            else:  # right after one of its next few sends
                self.doomed = (victim, self.rng.randrange(1, 4))
        elif self.down:
            await self.restart(self.rng.choice(sorted(self.down)))
        self.ask_for_members()
        self.check()

    # -- invariants (§5.2, §5.3, §5.4) ---------------------------------------------------

    def check(self) -> None:
        if self.broken:  # raised where sent, unless the loop ran that driver
            raise SafetyViolation(self.broken[0])
        live = self.live()
        for node in live:
            if node.role != Role.LEADER:
                continue
            seen = self.leaders.setdefault(node.term, node.id)
            if seen != node.id:
                raise SafetyViolation(f"election safety: {seen} and {node.id} both lead "
                                      f"term {node.term}")
            if node.term >= self.newest_term:
                for index, entry in self.committed.items():
                    if node.term_at(index) != entry.term and index > node.offset:
                        raise SafetyViolation(f"leader completeness: {node.id} (term "
                                              f"{node.term}) lacks committed {entry}")
        for a in range(len(live)):
            for b in range(a + 1, len(live)):
                check_log_matching(live[a], live[b])

    def check_proposals(self) -> None:
        """What the driver told each proposer holds: a result means its entry is
        the history's at that index; NotLeader means it is nowhere in it. Unavailable,
        or no answer from a server that crashed, leaves the outcome unknown."""
        history = {e.data for e in self.committed.values()}
        for data, future in self.proposals:
            if not future.done():
                continue
            error = future.exception()
            if error is None:
                entry = self.committed.get(future.result())
                if entry is None or (entry.data != data if data is not None
                                     else entry.kind != CONFIG):
                    raise SafetyViolation(f"{data!r} was acknowledged at index "
                                          f"{future.result()}, which holds {entry}")
            elif isinstance(error, NotLeader) and data in history:
                raise SafetyViolation(f"{data!r} was refused as not committed, and "
                                      "committed")

    async def heal_and_settle(self, max_steps: int = 5000) -> bool:
        """Reconnect everyone and run until a proposal commits everywhere (liveness)."""
        self.cut.clear()
        self.doomed = None
        for node_id in sorted(self.down):
            await self.restart(node_id)
        target = None
        for _ in range(max_steps):
            if self.network:
                self.deliver(0)
            else:
                for node_id in self.ids:
                    self.tick(node_id)
            self.ask_for_members()
            self.check()
            leader = self.leader()
            if leader is not None and target is None:
                try:
                    self.submit(leader.id, b"final")
                    target = leader.last_index  # nothing follows it yet
                except NotLeader:
                    target = None
            if target is not None and leader is not None and all(
                    self.applied_index[i] >= target for i in leader.peers):
                self.check_proposals()
                return True
        return False


def check_log_matching(a: RaftNode, b: RaftNode) -> None:
    """§5.3: where two logs hold an entry with the same index and term, they hold the
    same entries up to it (compared where both still have them)."""
    low = max(a.offset, b.offset) + 1
    high = min(a.last_index, b.last_index)
    for k in range(high, low - 1, -1):
        if a.term_at(k) == b.term_at(k):
            if a.entries(low, k + 1) != b.entries(low, k + 1):
                raise SafetyViolation(f"log matching: {a.id} and {b.id} agree at {k} "
                                      "but differ before")
            return


def elect(sim: SimCluster) -> RaftNode:
    """Tick and deliver in order until there is a leader; return it."""
    for _ in range(2000):
        for node_id in sim.ids:
            sim.tick(node_id)
        while sim.network:
            sim.deliver(0)
        leader = sim.leader()
        if leader is not None:
            return leader
    raise AssertionError("no leader elected")

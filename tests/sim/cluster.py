"""A deterministic in-memory Raft cluster: a seeded network that drops, duplicates,
reorders and partitions; nodes that crash and restart from what they persisted, take
snapshots and compact their logs; and membership that grows and shrinks one server at
a time. ``spares`` are servers that start empty, outside the cluster, until added."""

from __future__ import annotations

import random
from dataclasses import dataclass, field

from meshlet.raft.core import (
    ConfigChangeError,
    Entry,
    HardState,
    Message,
    NotLeaderError,
    RaftNode,
    Role,
    Snapshot,
    config_members,
)


@dataclass
class Disk:
    """What a node has fsynced: its snapshot, hard state and log after the snapshot."""

    snapshot: Snapshot | None = None
    hard: HardState = field(default_factory=HardState)
    log: list[Entry] = field(default_factory=list)


class SafetyViolation(AssertionError):
    pass


class SimCluster:
    def __init__(self, ids: list[str], seed: int, spares: int = 0) -> None:
        self.founders = list(ids)
        self.ids = ids + [f"spare{i}" for i in range(spares)]
        self.rng = random.Random(seed)
        self.disks = {i: Disk() for i in self.ids}
        self.states: dict[bytes, list[Entry]] = {}  # snapshot data -> applied entries
        self.nodes = {i: self.boot(i) for i in self.ids}
        self.applied: dict[str, list[Entry]] = {i: [] for i in self.ids}
        for founder in ids:
            self.nodes[founder].found({i: {} for i in ids})
        self.committed: list[Entry] = []        # the one true history, as applied
        self.leaders: dict[int, str] = {}       # term -> the leader seen for it
        self.network: list[Message] = []
        self.cut: set[frozenset[str]] = set()   # pairs that cannot talk
        self.down: set[str] = set()
        self.proposed = 0

    def boot(self, node_id: str) -> RaftNode:
        disk = self.disks[node_id]
        return RaftNode(node_id, random.Random(self.rng.random()), snapshot=disk.snapshot,
                        term=disk.hard.term, vote=disk.hard.vote, log=list(disk.log),
                        commit=disk.hard.commit)

    # -- driving ----------------------------------------------------------------------

    def process(self, node_id: str) -> None:
        """Handle Ready until there is none (advancing can commit more)."""
        for _ in range(10):
            if not self.process_once(node_id):
                return

    def process_once(self, node_id: str) -> bool:
        """The driver's order: persist, send, apply, advance."""
        node = self.nodes[node_id]
        ready = node.ready()
        if ready.empty():
            return False
        disk = self.disks[node_id]
        if ready.snapshot is not None:
            disk.snapshot = ready.snapshot
            self.applied[node_id] = list(self.states[ready.snapshot.data])
        if ready.hard_state is not None:
            disk.hard = ready.hard_state
        disk.log = list(node.log)  # the whole log after the snapshot, as rewritten
        for m in ready.messages:
            self.network.append(m)
        for entry in ready.committed:
            self.apply(node_id, entry)
        node.advance(ready)
        return True

    def apply(self, node_id: str, entry: Entry) -> None:
        applied = self.applied[node_id]
        if entry.index != len(applied) + 1:
            raise SafetyViolation(f"{node_id} applied {entry.index} after {len(applied)}")
        applied.append(entry)
        if entry.index <= len(self.committed):
            if self.committed[entry.index - 1] != entry:
                raise SafetyViolation(
                    f"state machine safety: {node_id} applied {entry} at {entry.index}, "
                    f"another node applied {self.committed[entry.index - 1]}")
        else:
            self.committed.append(entry)

    def deliver(self, index: int) -> None:
        m = self.network.pop(index)
        if m.to in self.down or frozenset((m.frm, m.to)) in self.cut:
            return
        self.nodes[m.to].step(m)
        self.process(m.to)

    def tick(self, node_id: str) -> None:
        if node_id in self.down:
            return
        self.nodes[node_id].tick()
        self.process(node_id)

    def crash(self, node_id: str) -> None:
        """Lose everything not yet persisted, including messages in its outbox."""
        self.down.add(node_id)
        self.applied[node_id] = []

    def restart(self, node_id: str) -> None:
        self.down.discard(node_id)
        self.nodes[node_id] = self.boot(node_id)
        snapshot = self.disks[node_id].snapshot
        self.applied[node_id] = list(self.states[snapshot.data]) if snapshot else []
        self.process(node_id)

    def compact(self, node_id: str) -> None:
        """Snapshot the node's applied state and fold its log into it."""
        node = self.nodes[node_id]
        if node.applied <= node.offset:
            return
        data = f"state-{len(self.states)}".encode()
        self.states[data] = list(self.applied[node_id])
        node.compact(node.applied, data)
        disk = self.disks[node_id]
        disk.snapshot, disk.log = node.snapshot, list(node.log)

    def leader(self) -> RaftNode | None:
        live = [n for i, n in self.nodes.items() if i not in self.down
                and n.role == Role.LEADER]
        return max(live, key=lambda n: n.term) if live else None

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
            leader.propose_config(members)
        except (ConfigChangeError, NotLeaderError):
            return
        self.process(leader.id)

    def propose(self) -> None:
        leader = self.leader()
        if leader is not None:
            try:
                leader.propose(f"cmd-{self.proposed}".encode())
            except NotLeaderError:
                return
            self.proposed += 1
            self.process(leader.id)

    def random_step(self, reconfigure: bool = False) -> None:
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
        elif r < 0.95 and len(self.down) < (len(self.founders) - 1) // 2 and live:
            self.crash(self.rng.choice(live))
        elif self.down:
            self.restart(self.rng.choice(sorted(self.down)))
        self.check()

    # -- invariants (§5.2, §5.3, §5.4) ---------------------------------------------------

    def check(self) -> None:
        for node_id, node in self.nodes.items():
            if node_id in self.down or node.role != Role.LEADER:
                continue
            seen = self.leaders.setdefault(node.term, node_id)
            if seen != node_id:
                raise SafetyViolation(f"election safety: {seen} and {node_id} both lead "
                                      f"term {node.term}")
            newest = max((e.term for e in self.committed), default=0)
            if node.term >= newest:
                for entry in self.committed[node.offset:]:
                    if node.term_at(entry.index) != entry.term:
                        raise SafetyViolation(f"leader completeness: {node_id} (term "
                                              f"{node.term}) lacks committed {entry}")
        live = [n for i, n in self.nodes.items() if i not in self.down]
        for a in range(len(live)):
            for b in range(a + 1, len(live)):
                check_log_matching(live[a], live[b])

    def heal_and_settle(self, max_steps: int = 5000) -> bool:
        """Reconnect everyone and run until a proposal commits everywhere (liveness)."""
        self.cut.clear()
        for node_id in sorted(self.down):
            self.restart(node_id)
        target = None
        for _ in range(max_steps):
            if self.network:
                self.deliver(0)
            else:
                for node_id in self.ids:
                    self.tick(node_id)
            self.check()
            leader = self.leader()
            if leader is not None and target is None:
                try:
                    target = leader.propose(b"final")
                except NotLeaderError:
                    target = None
                self.process(leader.id)
            if target is not None and leader is not None and all(
                    len(self.applied[i]) >= target for i in leader.peers):
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

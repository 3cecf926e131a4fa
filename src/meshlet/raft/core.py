"""The Raft state machine (Ongaro and Ousterhout, "In Search of an Understandable
Consensus Algorithm", extended version; section numbers below refer to it, "thesis"
to Ongaro's dissertation).

Implemented: leader election with randomized timeouts (§5.2) and pre-vote (thesis
§9.6), so a rejoining partitioned node cannot depose a healthy leader; log replication
with fast backtracking on the conflicting term (§5.3); commitment only of entries from
the leader's current term, by counting (§5.4.2, the Figure 8 rule); check-quorum (a
leader that has not heard from a majority within an election timeout steps down);
leadership transfer (TimeoutNow, thesis §3.10); snapshots and log compaction with
InstallSnapshot (§7); membership change one server at a time (thesis §4.1).

Membership: the configuration is the latest config entry in the log, committed or
not, else the snapshot's. A config entry's data is JSON ``{"members": {id: {...}}}``;
the core reads only the ids, the driver reads the addresses. A node whose
configuration does not name it never campaigns: a fresh server waiting to be added, or
one that was removed.

Leases: ``lease_stamp()`` tells the driver since when a majority is known to have
heard from this leader, so it may serve reads without a round trip (thesis §6.4.1).

Reads: ``read_index(ctx)`` (thesis §6.4): the leader notes its commit index, confirms
it is still leader with a heartbeat round acknowledged by a majority, then reports
``(ctx, index)`` in ``Ready.reads``; the driver serves the read once it has applied up
to ``index``, which makes the read linearizable.

The driver's obligations, in order, for each Ready: persist ``snapshot`` (then restore
the state machine from it), ``hard_state`` and ``entries`` (fsync), send ``messages``,
apply ``committed``, then ``advance``. After it has saved a snapshot of the state
machine at an applied index it calls ``compact``.
"""

from __future__ import annotations

import enum
import json
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

# Re-exported: the log's entry and kinds are imported from here too.
from meshlet.raft.entry import CONFIG as CONFIG  # noqa: PLC0414
from meshlet.raft.entry import NORMAL as NORMAL  # noqa: PLC0414
from meshlet.raft.entry import Entry as Entry  # noqa: PLC0414
from meshlet.raft.entry_log import EntryLog

if TYPE_CHECKING:
    import random

NodeId = str
APPEND_BATCH = 64
MAX_INFLIGHT = 4096            # entries sent to a follower and not yet acknowledged


class Role(enum.Enum):
    FOLLOWER = "follower"
    PRE_CANDIDATE = "pre-candidate"
    CANDIDATE = "candidate"
    LEADER = "leader"


class MsgType(enum.Enum):
    PRE_VOTE = "pre_vote"
    PRE_VOTE_RESP = "pre_vote_resp"
    VOTE = "vote"
    VOTE_RESP = "vote_resp"
    APPEND = "append"
    APPEND_RESP = "append_resp"
    TIMEOUT_NOW = "timeout_now"
    SNAPSHOT = "snapshot"


@dataclass(frozen=True)
class Snapshot:
    """The state machine as of ``index`` (whose entry had ``term``), with the
    configuration in force there."""

    index: int
    term: int
    config: bytes
    data: bytes = b""


@dataclass(frozen=True)
class Message:
    type: MsgType
    frm: NodeId
    to: NodeId
    term: int
    log_term: int = 0          # vote: candidate's last term; append: term at `index`;
                               # snapshot: its term
    index: int = 0             # vote: candidate's last index; append: prev index;
                               # append_resp: match index, or the reject hint;
                               # snapshot: its index
    entries: tuple[Entry, ...] = ()
    commit: int = 0
    reject: bool = False
    reject_term: int = 0       # append_resp: term of the follower's entry at the hint
    context: int = 0           # append/append_resp: the read-index round being confirmed
    snapshot: Snapshot | None = None
    stamp: int = 0             # append/snapshot: the leader's tick when sent; echoed back
    rejected: int = 0          # append_resp with reject: the prev index refused


@dataclass(frozen=True)
class HardState:
    term: int = 0
    vote: NodeId | None = None
    commit: int = 0


@dataclass
class Ready:
    hard_state: HardState | None
    entries: list[Entry]
    messages: list[Message]
    committed: list[Entry]
    reads: list[tuple[int, int]] = field(default_factory=list)  # (context, read index)
    snapshot: Snapshot | None = None   # received from the leader: persist and restore

    def empty(self) -> bool:
        return not (self.hard_state or self.entries or self.messages or self.committed
                    or self.reads or self.snapshot)


@dataclass
class PendingRead:
    context: int
    index: int
    acks: set[NodeId]


@dataclass
class Progress:
    match: int = 0
    next: int = 1
    recent_active: bool = False
    acked: int = 0             # the latest stamp this follower answered, in this term
    heard: int = 0             # our tick when it last answered
    probing: bool = True       # until a success: send from `next` and wait; then
                               # replicate: `next` runs ahead of what was sent


class NotLeaderError(Exception):
    def __init__(self, leader: NodeId | None) -> None:
        super().__init__(f"not the leader (leader: {leader})")
        self.leader = leader


class ConfigChangeError(Exception):
    """A membership change that may not be made now, with the reason."""


def encode_config(members: dict[NodeId, Any]) -> bytes:
    """Config entry data; sorted so every server bootstraps from identical bytes."""
    return json.dumps({"members": members}, sort_keys=True, separators=(",", ":")).encode()


def config_members(config: bytes) -> dict[NodeId, Any]:
    if not config:
        return {}
    members: dict[NodeId, Any] = json.loads(config)["members"]
    return members




@dataclass
class RaftNode:
    id: NodeId
    rng: random.Random
    election_ticks: int = 10
    heartbeat_ticks: int = 1
    term: int = 0
    vote: NodeId | None = None
    snapshot: Snapshot | None = None   # the latest, what the log starts after
    log: EntryLog = field(default_factory=EntryLog)  # index i at position i - offset - 1
    commit: int = 0
    offset: int = 0                    # index of the last entry folded into `snapshot`
    offset_term: int = 0
    stable: int = 0                    # entries up to here are persisted
    applied: int = 0
    peers: tuple[NodeId, ...] = ()     # the voters of the current configuration
    config_index: int = 0              # where that configuration came from
    role: Role = Role.FOLLOWER
    leader: NodeId | None = None
    progress: dict[NodeId, Progress] = field(default_factory=dict)
    votes: dict[NodeId, bool] = field(default_factory=dict)
    elapsed: int = 0
    heartbeat_elapsed: int = 0
    timeout: int = 0
    transfer_to: NodeId | None = None
    outbox: list[Message] = field(default_factory=list)
    pending_reads: list[PendingRead] = field(default_factory=list)
    append_due: bool = False
    ready_reads: list[tuple[int, int]] = field(default_factory=list)
    received_snapshot: Snapshot | None = None
    ticks: int = 0                     # ticks since start: the clock of leases
    transfer_tick: int | None = None   # when we last told a follower to take over
    quiet_ticks: int = 0               # no votes before this tick (set at start)
    elections: int = 0                 # elections this node started (not pre-votes)
    _last_hard: HardState = field(default_factory=HardState)

    def __post_init__(self) -> None:
        if self.snapshot is not None:
            self.offset, self.offset_term = self.snapshot.index, self.snapshot.term
        self.commit = max(self.commit, self.offset)
        self.applied = self.offset
        self._last_hard = HardState(self.term, self.vote, self.commit)
        self.stable = self.last_index
        self.quiet_ticks = self.election_ticks if self.term > 1 else 0
        self.refresh_config()
        self.reset_timeout()
        if self.term <= 1:  # a new cluster has no leader to wait for: elect sooner
            self.timeout = self.election_ticks // 3 + self.rng.randrange(
                max(self.election_ticks // 2, 1))

    def __repr__(self) -> str:
        return (f"<RaftNode {self.id} {self.role.value} term={self.term} "
                f"last={self.last_index} commit={self.commit} leader={self.leader}>")

    # -- log ------------------------------------------------------------------------

    @property
    def last_index(self) -> int:
        return self.offset + len(self.log)

    @property
    def last_term(self) -> int:
        return self.log.term(-1) if self.log else self.offset_term

    def term_at(self, index: int) -> int:
        """The term of the entry at ``index``; 0 if unknown (compacted or absent)."""
        if index == self.offset:
            return self.offset_term
        if self.offset < index <= self.last_index:
            return self.log.term(index - self.offset - 1)
        return 0

    def entries(self, start: int, end: int) -> list[Entry]:
        """Entries with ``start <= index < end`` that the log still holds."""
        return self.log.entries(start - self.offset - 1, end - self.offset - 1, self.offset)

    def truncate_from(self, index: int) -> None:
        self.log.truncate(index - self.offset - 1)
        self.stable = min(self.stable, index - 1)

    def quorum(self) -> int:
        return len(self.peers) // 2 + 1

    def up_to_date(self, last_term: int, last_index: int) -> bool:
        """§5.4.1: the candidate's log is at least as up-to-date as ours."""
        return (last_term, last_index) >= (self.last_term, self.last_index)

    # -- configuration ------------------------------------------------------------------

    @property
    def config(self) -> bytes:
        """The configuration in force: the latest config entry, else the snapshot's."""
        if self.config_index > self.offset:
            return self.log.data(self.config_index - self.offset - 1)
        return self.snapshot.config if self.snapshot is not None else b""

    def refresh_config(self) -> None:
        self.config_index = self.offset + 1 + self.log.last_of_kind(CONFIG)  # offset: none
        self.peers = tuple(sorted(config_members(self.config)))
        if self.role == Role.LEADER:
            for peer in self.peers:
                self.progress.setdefault(peer, Progress(0, self.last_index + 1))
            for gone in [p for p in self.progress if p not in self.peers and p != self.id]:
                del self.progress[gone]

    def config_at(self, index: int) -> bytes:
        position = self.log.last_of_kind(CONFIG, index - self.offset)
        if position >= 0:
            return self.log.data(position)
        return self.snapshot.config if self.snapshot is not None else b""

    def found(self, members: dict[NodeId, Any]) -> None:
        """Start a new cluster: its first entry, in term 1, names the founders. Every
        founder writes the same entry, and a founder that did not (it was slower to
        decide) receives it from the leader like any other."""
        assert self.last_index == 0 and not self.peers, "only an empty server founds"
        self.term = max(self.term, 1)
        self.log.append(Entry(1, 1, encode_config(members), CONFIG))
        self.refresh_config()

    def propose_config(self, members: dict[NodeId, Any]) -> int:
        """Append a configuration that adds or removes one voter (thesis §4.1). Raises
        NotLeaderError, or ConfigChangeError while an earlier change is uncommitted,
        before this leader has committed an entry of its term, or for a change of more
        than one voter."""
        if self.role != Role.LEADER or self.transfer_to is not None:
            raise NotLeaderError(self.leader if self.role != Role.LEADER else None)
        if self.config_index > self.commit or self.term_at(self.commit) != self.term:
            raise ConfigChangeError("a membership change is still in progress; try again")
        if not members:
            raise ConfigChangeError("the last server cannot be removed")
        if len(set(members) ^ set(self.peers)) > 1:
            raise ConfigChangeError("membership changes one server at a time")
        return self.append_entry(encode_config(members), CONFIG)

    # -- inputs ---------------------------------------------------------------------

    def tick(self) -> None:
        self.ticks += 1
        self.elapsed += 1
        if self.role == Role.LEADER:
            self.heartbeat_elapsed += 1
            if self.heartbeat_elapsed >= self.heartbeat_ticks:
                self.heartbeat_elapsed = 0
                self.broadcast_append()
            if self.elapsed >= self.election_ticks:
                self.elapsed = 0
                self.check_quorum()
                self.transfer_to = None  # a transfer that did not finish in time
        elif self.elapsed >= self.timeout and self.id in self.peers:
            self.campaign(pre=True)

    def propose(self, data: bytes) -> int:
        """Append ``data`` on the leader; returns its index. Raises NotLeaderError."""
        if self.role != Role.LEADER or self.transfer_to is not None:
            raise NotLeaderError(self.leader if self.role != Role.LEADER else None)
        return self.append_entry(data, NORMAL)

    def append_entry(self, data: bytes, kind: int) -> int:
        entry = Entry(self.term, self.last_index + 1, data, kind)
        self.log.append(entry)
        if kind == CONFIG:
            self.refresh_config()
        self.append_due = True  # sent with the next Ready, batched with other proposals
        if self.peers == (self.id,):
            self.maybe_commit()
        return entry.index

    def read_index(self, context: int) -> None:
        """Ask for a linearizable read point; answered in ``Ready.reads``. Raises
        NotLeaderError on a follower, or while this leader has not yet committed an
        entry of its own term (its commit index might be stale)."""
        if self.role != Role.LEADER or self.term_at(self.commit) != self.term:
            raise NotLeaderError(self.leader if self.role != Role.LEADER else None)
        if self.peers == (self.id,):
            self.ready_reads.append((context, self.commit))
            return
        acks = {self.id} if self.id in self.peers else set()
        self.pending_reads.append(PendingRead(context, self.commit, acks))
        for peer in self.peers:
            if peer != self.id:
                self.send_append(peer, context)

    def transfer_leadership(self, to: NodeId) -> None:
        """Hand leadership to ``to`` once its log is caught up (thesis §3.10)."""
        if self.role != Role.LEADER or to == self.id or to not in self.peers:
            return
        self.transfer_to = to
        self.elapsed = 0
        if self.progress[to].match == self.last_index:
            self.send_timeout_now(to)
        else:
            self.send_append(to)

    def send_timeout_now(self, to: NodeId) -> None:
        self.transfer_tick = self.ticks
        self.send(Message(MsgType.TIMEOUT_NOW, self.id, to, self.term))

    def lease_stamp(self) -> int | None:
        """The tick from which a majority has since heard from this leader, or None
        when it holds no lease. A follower that heard from us will not vote for anyone
        else for an election timeout of its own ticks (pre-vote and the §4.2.3 rule),
        so until that long after this stamp no other leader can exist. The driver turns
        ticks into time: ticks never run faster than their interval. Leadership
        transfer voids the lease: the target's election skips those rules."""
        if self.role != Role.LEADER or self.transfer_to is not None \
                or self.term_at(self.commit) != self.term:
            return None
        if self.transfer_tick is not None and \
                self.ticks - self.transfer_tick <= 2 * self.election_ticks:
            return None
        stamps = sorted((self.ticks if p == self.id else self.progress[p].acked
                         for p in self.peers), reverse=True)
        return stamps[self.quorum() - 1]

    def compact(self, index: int, data: bytes) -> None:
        """The driver saved ``data``, the state machine as of applied ``index``: fold
        the log up to there into a snapshot."""
        assert self.offset <= index <= self.applied, (self.offset, index, self.applied)
        if index == self.offset:
            return
        self.snapshot = Snapshot(index, self.term_at(index), self.config_at(index), data)
        self.log.drop_first(index - self.offset)
        self.offset, self.offset_term = index, self.snapshot.term

    def step(self, m: Message) -> None:
        if m.term > self.term:
            if m.type == MsgType.PRE_VOTE:
                pass  # a pre-vote does not change our term
            elif m.type == MsgType.PRE_VOTE_RESP and not m.reject:
                pass  # our own pre-campaign's future term
            elif m.type == MsgType.VOTE and m.commit != 1 and self.leader_recently_seen():
                return  # thesis §4.2.3: ignore disruptive votes while a leader lives
                # (commit=1 marks a vote forced by leadership transfer)
            else:
                leader = m.frm if m.type in (MsgType.APPEND, MsgType.SNAPSHOT) else None
                self.become_follower(m.term, leader)
        elif m.term < self.term:
            if m.type in (MsgType.PRE_VOTE, MsgType.VOTE):
                self.send(Message(MsgType.PRE_VOTE_RESP if m.type == MsgType.PRE_VOTE
                                  else MsgType.VOTE_RESP, self.id, m.frm, self.term,
                                  reject=True))
            elif m.type in (MsgType.APPEND, MsgType.SNAPSHOT):
                # Tell a stale leader about the newer term so it steps down.
                self.send(Message(MsgType.APPEND_RESP, self.id, m.frm, self.term,
                                  reject=True))
            return
        handler = {
            MsgType.PRE_VOTE: self.on_vote_request,
            MsgType.VOTE: self.on_vote_request,
            MsgType.PRE_VOTE_RESP: self.on_vote_response,
            MsgType.VOTE_RESP: self.on_vote_response,
            MsgType.APPEND: self.on_append,
            MsgType.APPEND_RESP: self.on_append_response,
            MsgType.TIMEOUT_NOW: self.on_timeout_now,
            MsgType.SNAPSHOT: self.on_snapshot,
        }[m.type]
        handler(m)

    def leader_recently_seen(self) -> bool:
        """While true we vote for no one (unless leadership is being transferred): a
        leader was heard within an election timeout, or we started less than one ago
        and may have heard one before a crash (a leader's lease counts on our
        silence). A server still in term 1 or below never answered any leader: the
        first leader is elected in term 2. A new cluster elects without waiting."""
        return (self.leader is not None and self.elapsed < self.election_ticks
                and self.role == Role.FOLLOWER) or self.ticks < self.quiet_ticks

    # -- elections ------------------------------------------------------------------

    def reset_timeout(self) -> None:
        self.elapsed = 0
        self.timeout = self.election_ticks + self.rng.randrange(self.election_ticks)

    def become_follower(self, term: int, leader: NodeId | None) -> None:
        if term != self.term:
            self.vote = None
        self.pending_reads.clear()  # the driver fails reads it has not been answered
        self.term = term
        self.role = Role.FOLLOWER
        self.leader = leader
        self.transfer_to = None
        self.reset_timeout()

    def campaign(self, pre: bool, forced: bool = False) -> None:
        if self.role == Role.LEADER or self.id not in self.peers:
            return
        self.reset_timeout()
        self.votes = {self.id: True}
        if pre:
            self.role = Role.PRE_CANDIDATE
            self.leader = None
            term = self.term + 1  # the term we would stand in; ours is unchanged
            kind = MsgType.PRE_VOTE
        else:
            self.term += 1
            self.vote = self.id
            self.role = Role.CANDIDATE
            self.elections += 1
            self.leader = None
            term = self.term
            kind = MsgType.VOTE
        if self.tally() >= self.quorum():
            self.won(pre)
            return
        for peer in self.peers:
            if peer != self.id:
                self.send(Message(kind, self.id, peer, term, self.last_term, self.last_index,
                                  commit=1 if forced else 0))

    def on_vote_request(self, m: Message) -> None:
        pre = m.type == MsgType.PRE_VOTE
        can_vote = pre or self.vote in (None, m.frm)
        granted = can_vote and self.up_to_date(m.log_term, m.index) and (
            m.commit == 1 or not pre or not self.leader_recently_seen())
        kind = MsgType.PRE_VOTE_RESP if pre else MsgType.VOTE_RESP
        self.send(Message(kind, self.id, m.frm, m.term if granted else self.term,
                          reject=not granted))
        if granted and not pre:
            self.vote = m.frm
            self.reset_timeout()

    def on_vote_response(self, m: Message) -> None:
        pre = m.type == MsgType.PRE_VOTE_RESP
        if (pre and self.role != Role.PRE_CANDIDATE) or \
                (not pre and self.role != Role.CANDIDATE) or m.frm not in self.peers:
            return
        self.votes[m.frm] = not m.reject
        if self.tally() >= self.quorum():
            self.won(pre)
        elif len(self.votes) - self.tally() >= self.quorum():
            self.become_follower(self.term, None)

    def tally(self) -> int:
        return sum(1 for peer, granted in self.votes.items() if granted and peer in self.peers)

    def won(self, pre: bool) -> None:
        if pre:
            self.campaign(pre=False)
        else:
            self.become_leader()

    def become_leader(self) -> None:
        self.role = Role.LEADER
        self.leader = self.id
        self.transfer_to = None
        self.elapsed = 0
        self.heartbeat_elapsed = 0
        self.progress = {p: Progress(0, self.last_index + 1, heard=self.ticks)
                         for p in self.peers}
        self.progress[self.id].recent_active = True
        # §8: an empty entry of our own term lets earlier entries commit (Figure 8).
        self.log.append(Entry(self.term, self.last_index + 1, b""))
        self.broadcast_append()
        if self.peers == (self.id,):
            self.maybe_commit()

    def check_quorum(self) -> None:
        active = sum(1 for p in self.peers
                     if p == self.id or self.progress[p].recent_active)
        for p, pr in self.progress.items():
            if p != self.id:
                pr.recent_active = False
        if active < self.quorum():
            self.become_follower(self.term, None)

    def on_timeout_now(self, m: Message) -> None:
        if self.role != Role.LEADER:
            self.campaign(pre=False, forced=True)

    # -- replication ------------------------------------------------------------------

    def broadcast_append(self) -> None:
        for peer in self.peers:
            if peer != self.id:
                self.send_append(peer)

    def send_append(self, peer: NodeId, context: int = 0) -> None:
        pr = self.progress[peer]
        prev = pr.next - 1
        if prev < self.offset:
            # The entries it needs were compacted: send the snapshot (§7) and carry on
            # optimistically after it; a reject brings us back here if it was lost.
            assert self.snapshot is not None
            self.send(Message(MsgType.SNAPSHOT, self.id, peer, self.term,
                              self.snapshot.term, self.snapshot.index,
                              commit=self.commit, snapshot=self.snapshot,
                              stamp=self.ticks))
            pr.next = self.snapshot.index + 1
            prev = self.snapshot.index
        room = APPEND_BATCH if pr.probing else min(APPEND_BATCH,
                                                   pr.match + MAX_INFLIGHT - prev)
        entries = tuple(self.entries(prev + 1, prev + 1 + max(room, 0)))
        self.send(Message(MsgType.APPEND, self.id, peer, self.term, self.term_at(prev), prev,
                          entries, self.commit, context=context, stamp=self.ticks))
        if entries and not pr.probing:
            pr.next = entries[-1].index + 1  # pipelined: do not send them again

    def on_append(self, m: Message) -> None:
        self.role = Role.FOLLOWER
        self.leader = m.frm
        self.elapsed = 0
        if m.index < self.commit:
            # Everything up to our commit index is already known to match the leader's.
            self.send(Message(MsgType.APPEND_RESP, self.id, m.frm, self.term,
                              index=self.commit, context=m.context, stamp=m.stamp))
            return
        if m.index > self.last_index or self.term_at(m.index) != m.log_term:
            # §5.3 with fast backtracking: point the leader at our end, or before the
            # first index of the conflicting term, so it skips a term per round trip.
            hint = min(m.index, self.last_index)
            hint_term = self.term_at(hint)
            if m.index <= self.last_index:
                while hint > self.commit + 1 and self.term_at(hint - 1) == hint_term:
                    hint -= 1
                hint -= 1  # the last index before the conflicting term
            self.send(Message(MsgType.APPEND_RESP, self.id, m.frm, self.term, index=hint,
                              reject=True, reject_term=hint_term, context=m.context,
                              stamp=m.stamp, rejected=m.index))
            return
        reconfigured = False
        for entry in m.entries:
            if entry.index <= self.last_index:
                if self.term_at(entry.index) == entry.term:
                    continue
                assert entry.index > self.commit, "a committed entry may never be replaced"
                reconfigured |= self.config_index >= entry.index
                self.truncate_from(entry.index)
            assert entry.index == self.last_index + 1, "appended entries follow the log"
            self.log.append(entry)
            reconfigured |= entry.kind == CONFIG
        if reconfigured:
            self.refresh_config()
        match = m.index + len(m.entries)
        if m.commit > self.commit:
            self.commit = min(m.commit, match)
        self.send(Message(MsgType.APPEND_RESP, self.id, m.frm, self.term, index=match,
                          context=m.context, stamp=m.stamp))

    def on_snapshot(self, m: Message) -> None:
        """InstallSnapshot (§7): replace our log by the leader's snapshot, unless we
        already hold everything it covers."""
        self.role = Role.FOLLOWER
        self.leader = m.frm
        self.elapsed = 0
        snap = m.snapshot
        assert snap is not None
        if snap.index <= self.commit:
            self.send(Message(MsgType.APPEND_RESP, self.id, m.frm, self.term,
                              index=self.commit, stamp=m.stamp))
            return
        if self.term_at(snap.index) == snap.term:
            self.commit = snap.index  # our log already holds it: just move commit on
        else:
            self.log = EntryLog()
            self.snapshot = snap
            self.offset, self.offset_term = snap.index, snap.term
            self.commit = self.stable = snap.index
            self.received_snapshot = snap
            self.refresh_config()
        self.send(Message(MsgType.APPEND_RESP, self.id, m.frm, self.term, index=snap.index,
                          stamp=m.stamp))

    def on_append_response(self, m: Message) -> None:
        if self.role != Role.LEADER or m.frm not in self.progress:
            return
        pr = self.progress[m.frm]
        pr.recent_active = True
        pr.acked = max(pr.acked, m.stamp)
        pr.heard = self.ticks
        if m.context:
            self.confirm_reads(m.frm, m.context)
        if m.reject:
            if m.rejected <= pr.match or (pr.probing and m.rejected != pr.next - 1):
                return  # an answer to an older append; the follower has moved on
            pr.probing = True
            pr.next = max(pr.match + 1, min(pr.next - 1, m.index + 1))
            self.send_append(m.frm)
            return
        if pr.probing:
            pr.probing = False
            pr.next = max(pr.next, m.index + 1)
        if m.index > pr.match:
            pr.match = m.index
            pr.next = max(pr.next, m.index + 1)
            self.maybe_commit()
        if self.role == Role.LEADER and pr.next <= self.last_index:
            self.send_append(m.frm)
        if self.transfer_to == m.frm and pr.match == self.last_index:
            self.send_timeout_now(m.frm)

    def confirm_reads(self, peer: NodeId, context: int) -> None:
        """A peer acknowledged our leadership in read round ``context`` (and so every
        earlier round): reads confirmed by a majority become ready."""
        if peer not in self.peers:
            return
        still: list[PendingRead] = []
        for read in self.pending_reads:
            if read.context <= context:
                read.acks.add(peer)
            if len(read.acks) >= self.quorum():
                self.ready_reads.append((read.context, read.index))
            else:
                still.append(read)
        self.pending_reads = still

    def maybe_commit(self) -> None:
        # The leader counts its own copy once persisted (thesis §10.2.1 allows sooner),
        # and only while it is a voter (thesis §4.2.2: a removed leader does not count).
        self.progress[self.id].match = self.stable
        matches = sorted((self.progress[p].match for p in self.peers), reverse=True)
        candidate = matches[self.quorum() - 1]
        # §5.4.2: only an entry of the current term commits by counting replicas.
        if candidate > self.commit and self.term_at(candidate) == self.term:
            self.commit = candidate
            self.broadcast_append()
        if self.id not in self.peers and self.commit >= self.config_index:
            self.become_follower(self.term, None)  # our removal committed: step down

    # -- output -----------------------------------------------------------------------

    def send(self, m: Message) -> None:
        self.outbox.append(m)

    def ready(self) -> Ready:
        if self.append_due:
            self.append_due = False
            if self.role == Role.LEADER:
                self.broadcast_append()
        hard = HardState(self.term, self.vote, self.commit)
        start = max(self.applied, self.offset) + 1
        return Ready(
            hard_state=hard if hard != self._last_hard else None,
            entries=self.entries(self.stable + 1, self.last_index + 1),
            messages=list(self.outbox),
            committed=self.entries(start, min(self.commit, self.stable) + 1),
            reads=list(self.ready_reads),
            snapshot=self.received_snapshot,
        )

    def advance(self, ready: Ready) -> None:
        """The driver persisted, sent and applied ``ready``."""
        if ready.hard_state is not None:
            self._last_hard = ready.hard_state
        if ready.snapshot is not None:
            self.applied = max(self.applied, ready.snapshot.index)
            if self.received_snapshot is ready.snapshot:
                self.received_snapshot = None
        if ready.entries:
            last = ready.entries[-1]
            if self.term_at(last.index) == last.term:
                self.stable = max(self.stable, last.index)
        del self.outbox[:len(ready.messages)]
        del self.ready_reads[:len(ready.reads)]
        if ready.committed:
            self.applied = ready.committed[-1].index
        if self.role == Role.LEADER:
            self.maybe_commit()

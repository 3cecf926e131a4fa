"""The Raft state machine (Ongaro and Ousterhout, "In Search of an Understandable
Consensus Algorithm", extended version; section numbers below refer to it).

Implemented: leader election with randomized timeouts (§5.2) and pre-vote (§9.6 of
Ongaro's thesis), so a rejoining partitioned node cannot depose a healthy leader; log
replication with fast backtracking on the conflicting term (§5.3); commitment only of
entries from the leader's current term, by counting (§5.4.2, the Figure 8 rule);
check-quorum (a leader that has not heard from a majority within an election timeout
steps down); leadership transfer (TimeoutNow, thesis §3.10).

Reads: ``read_index(ctx)`` (thesis §6.4): the leader notes its commit index, confirms
it is still leader with a heartbeat round acknowledged by a majority, then reports
``(ctx, index)`` in ``Ready.reads``; the driver serves the read once it has applied up
to ``index``, which makes the read linearizable.

Not yet: snapshots/InstallSnapshot, membership change. The driver's
obligations, in order, for each Ready: persist ``hard_state`` and ``entries`` (fsync),
send ``messages``, apply ``committed``, then ``advance``.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import random

NodeId = str


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


@dataclass(frozen=True)
class Entry:
    term: int
    index: int
    data: bytes = b""


@dataclass(frozen=True)
class Message:
    type: MsgType
    frm: NodeId
    to: NodeId
    term: int
    log_term: int = 0          # vote: candidate's last term; append: term at `index`
    index: int = 0             # vote: candidate's last index; append: prev index;
                               # append_resp: match index, or the reject hint
    entries: tuple[Entry, ...] = ()
    commit: int = 0
    reject: bool = False
    reject_term: int = 0       # append_resp: term of the follower's entry at the hint
    context: int = 0           # append/append_resp: the read-index round being confirmed


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

    def empty(self) -> bool:
        return not (self.hard_state or self.entries or self.messages or self.committed
                    or self.reads)


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


class NotLeaderError(Exception):
    def __init__(self, leader: NodeId | None) -> None:
        super().__init__(f"not the leader (leader: {leader})")
        self.leader = leader


@dataclass
class RaftNode:
    id: NodeId
    peers: tuple[NodeId, ...]          # every voter, this node included
    rng: random.Random
    election_ticks: int = 10
    heartbeat_ticks: int = 1
    term: int = 0
    vote: NodeId | None = None
    log: list[Entry] = field(default_factory=list)  # index i at log[i - 1]
    commit: int = 0
    stable: int = 0                    # entries up to here are persisted
    applied: int = 0
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
    _last_hard: HardState = field(default_factory=HardState)

    def __post_init__(self) -> None:
        assert self.id in self.peers, "a node must be one of its peers"
        self._last_hard = HardState(self.term, self.vote, self.commit)
        self.stable = len(self.log)
        self.reset_timeout()

    def __repr__(self) -> str:
        return (f"<RaftNode {self.id} {self.role.value} term={self.term} "
                f"last={self.last_index} commit={self.commit} leader={self.leader}>")

    # -- log ------------------------------------------------------------------------

    @property
    def last_index(self) -> int:
        return len(self.log)

    @property
    def last_term(self) -> int:
        return self.log[-1].term if self.log else 0

    def term_at(self, index: int) -> int:
        return self.log[index - 1].term if 0 < index <= len(self.log) else 0

    def quorum(self) -> int:
        return len(self.peers) // 2 + 1

    def up_to_date(self, last_term: int, last_index: int) -> bool:
        """§5.4.1: the candidate's log is at least as up-to-date as ours."""
        return (last_term, last_index) >= (self.last_term, self.last_index)

    # -- inputs ---------------------------------------------------------------------

    def tick(self) -> None:
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
        elif self.elapsed >= self.timeout and len(self.peers) > 0:
            self.campaign(pre=True)

    def propose(self, data: bytes) -> int:
        """Append ``data`` on the leader; returns its index. Raises NotLeaderError."""
        if self.role != Role.LEADER or self.transfer_to is not None:
            raise NotLeaderError(self.leader if self.role != Role.LEADER else None)
        entry = Entry(self.term, self.last_index + 1, data)
        self.log.append(entry)
        self.append_due = True  # sent with the next Ready, batched with other proposals
        if len(self.peers) == 1:
            self.maybe_commit()
        return entry.index

    def read_index(self, context: int) -> None:
        """Ask for a linearizable read point; answered in ``Ready.reads``. Raises
        NotLeaderError on a follower, or while this leader has not yet committed an
        entry of its own term (its commit index might be stale)."""
        if self.role != Role.LEADER or self.term_at(self.commit) != self.term:
            raise NotLeaderError(self.leader if self.role != Role.LEADER else None)
        if len(self.peers) == 1:
            self.ready_reads.append((context, self.commit))
            return
        self.pending_reads.append(PendingRead(context, self.commit, {self.id}))
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
            self.send(Message(MsgType.TIMEOUT_NOW, self.id, to, self.term))
        else:
            self.send_append(to)

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
                leader = m.frm if m.type == MsgType.APPEND else None
                self.become_follower(m.term, leader)
        elif m.term < self.term:
            if m.type in (MsgType.PRE_VOTE, MsgType.VOTE):
                self.send(Message(MsgType.PRE_VOTE_RESP if m.type == MsgType.PRE_VOTE
                                  else MsgType.VOTE_RESP, self.id, m.frm, self.term,
                                  reject=True))
            elif m.type == MsgType.APPEND:
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
        }[m.type]
        handler(m)

    def leader_recently_seen(self) -> bool:
        return self.leader is not None and self.elapsed < self.election_ticks \
            and self.role == Role.FOLLOWER

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
        if self.role == Role.LEADER:
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
                (not pre and self.role != Role.CANDIDATE):
            return
        self.votes[m.frm] = not m.reject
        if self.tally() >= self.quorum():
            self.won(pre)
        elif len(self.votes) - self.tally() >= self.quorum():
            self.become_follower(self.term, None)

    def tally(self) -> int:
        return sum(1 for granted in self.votes.values() if granted)

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
        self.progress = {p: Progress(0, self.last_index + 1) for p in self.peers}
        self.progress[self.id].recent_active = True
        # §8: an empty entry of our own term lets earlier entries commit (Figure 8).
        self.log.append(Entry(self.term, self.last_index + 1, b""))
        self.broadcast_append()
        if len(self.peers) == 1:
            self.maybe_commit()

    def check_quorum(self) -> None:
        active = sum(1 for p, pr in self.progress.items() if p == self.id or pr.recent_active)
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
        entries = tuple(self.log[prev:prev + 64])
        self.send(Message(MsgType.APPEND, self.id, peer, self.term, self.term_at(prev), prev,
                          entries, self.commit, context=context))

    def on_append(self, m: Message) -> None:
        self.role = Role.FOLLOWER
        self.leader = m.frm
        self.elapsed = 0
        if m.index > self.last_index or self.term_at(m.index) != m.log_term:
            # §5.3 with fast backtracking: point the leader at the first index of the
            # conflicting term (or our end), so it skips a whole term per round trip.
            hint = min(m.index, self.last_index)
            hint_term = self.term_at(hint)
            while hint > 0 and self.term_at(hint - 1) == hint_term and hint_term > 0:
                hint -= 1
            if hint_term > 0:
                hint -= 1  # the last index before the conflicting term
            self.send(Message(MsgType.APPEND_RESP, self.id, m.frm, self.term, index=hint,
                              reject=True, reject_term=hint_term, context=m.context))
            return
        for entry in m.entries:
            if entry.index <= self.last_index:
                if self.term_at(entry.index) == entry.term:
                    continue
                assert entry.index > self.commit, "a committed entry may never be replaced"
                del self.log[entry.index - 1:]
                self.stable = min(self.stable, entry.index - 1)
            self.log.append(entry)
        match = m.index + len(m.entries)
        if m.commit > self.commit:
            self.commit = min(m.commit, match)
        self.send(Message(MsgType.APPEND_RESP, self.id, m.frm, self.term, index=match,
                          context=m.context))

    def on_append_response(self, m: Message) -> None:
        if self.role != Role.LEADER:
            return
        pr = self.progress[m.frm]
        pr.recent_active = True
        if m.context:
            self.confirm_reads(m.frm, m.context)
        if m.reject:
            pr.next = max(1, min(pr.next - 1, m.index + 1))
            if pr.match < pr.next:
                self.send_append(m.frm)
            return
        if m.index > pr.match:
            pr.match = m.index
            pr.next = max(pr.next, m.index + 1)
            self.maybe_commit()
        if pr.next <= self.last_index:
            self.send_append(m.frm)
        if self.transfer_to == m.frm and pr.match == self.last_index:
            self.send(Message(MsgType.TIMEOUT_NOW, self.id, m.frm, self.term))

    def confirm_reads(self, peer: NodeId, context: int) -> None:
        """A peer acknowledged our leadership in read round ``context`` (and so every
        earlier round): reads confirmed by a majority become ready."""
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
        # The leader counts its own copy once persisted (thesis §10.2.1 allows sooner).
        self.progress[self.id].match = self.stable
        matches = sorted((pr.match for pr in self.progress.values()), reverse=True)
        candidate = matches[self.quorum() - 1]
        # §5.4.2: only an entry of the current term commits by counting replicas.
        if candidate > self.commit and self.term_at(candidate) == self.term:
            self.commit = candidate
            self.broadcast_append()

    # -- output -----------------------------------------------------------------------

    def send(self, m: Message) -> None:
        self.outbox.append(m)

    def ready(self) -> Ready:
        if self.append_due:
            self.append_due = False
            if self.role == Role.LEADER:
                self.broadcast_append()
        hard = HardState(self.term, self.vote, self.commit)
        return Ready(
            hard_state=hard if hard != self._last_hard else None,
            entries=self.log[self.stable:],
            messages=list(self.outbox),
            committed=self.log[self.applied:min(self.commit, self.stable)],
            reads=list(self.ready_reads),
        )

    def advance(self, ready: Ready) -> None:
        """The driver persisted, sent and applied ``ready``."""
        if ready.hard_state is not None:
            self._last_hard = ready.hard_state
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

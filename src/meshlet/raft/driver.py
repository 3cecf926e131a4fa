"""Runs one Raft node: ticks on a timer (or from its caller), with the storage and the
transport it is given (``interfaces``): on disk and TCP in a server (``on_disk``), in
memory in the simulator.

For every Ready, in order: persist (a received snapshot first, restoring the state
machine from it; then entries and hard state, fsync), send, apply, advance. A
proposal's future resolves with the apply function's result once its entry is applied
here. It fails with NotLeader only when the write certainly did not commit (another
leader's entry took its place), which the API may safely forward to the leader; when
leadership is lost or the node stops first, the write may still commit, and it fails
with Unavailable, which the client must treat as an unknown outcome. A leader's own
fsync, when its storage owes one, runs on a thread; its entries count as persisted
once it returns. Every
``snapshot_every`` applied entries (at most once per ``snapshot_interval``) a forked
child snapshots the state machine, and the log is then compacted; with a storage that
cannot be written from a child (memory), or when fork fails, the snapshot is taken on
the loop. Peer addresses come from the configuration in the log: each member's
``{"raft": "HOST:PORT", ...}``.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections import Counter, deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from meshlet.addresses import parse_hostport
from meshlet.errors import ConfigError, MeshletError, NotLeader, Unavailable
from meshlet.raft.background_snapshot import BackgroundSnapshot
from meshlet.raft.core import (
    CONFIG,
    ConfigChangeError,
    Entry,
    Message,
    NotLeaderError,
    RaftNode,
    Ready,
    Role,
    Snapshot,
    config_members,
)
from meshlet.raft.entry_log import EntryLog
from meshlet.raft.interfaces import Storage, Transport, forkable
from meshlet.raft.storage import RaftStorage
from meshlet.raft.transport import TcpTransport, TransportTls

log = logging.getLogger(__name__)


@dataclass
class SnapshotStats:
    """Snapshots taken here and installed from a leader: counts, time, last size."""

    taken: int = 0
    installed: int = 0
    seconds: float = 0.0
    last_bytes: int = 0

    def record(self, size: int, seconds: float, installed: bool = False) -> None:
        if installed:
            self.installed += 1
        else:
            self.taken += 1
        self.seconds += seconds
        self.last_bytes = size


def raft_addresses(members: dict[str, Any]) -> dict[str, tuple[str, int]]:
    """Each member's Raft address (members without one, e.g. a server alone, have none)."""
    addresses = {}
    for node_id, info in members.items():
        if isinstance(info, dict) and info.get("raft"):
            try:
                addresses[node_id] = parse_hostport(info["raft"], "raft")
            except MeshletError:
                log.warning("member %s has an unusable raft address %r", node_id, info)
    return addresses


def snapshot_due(entries: int, threshold: int, seconds: float, interval: float) -> bool:
    """Consul's policy: a snapshot once ``threshold`` entries have piled up, at most one
    per ``interval`` (each costs a fork and a serialisation of the whole state), but
    always past 16 times the threshold, which bounds the log in memory and on disk."""
    return entries >= threshold and (seconds >= interval or entries >= 16 * threshold)


def not_leader(exc: NotLeaderError) -> NotLeader:
    return NotLeader(f"not the leader; leader is {exc.leader}")


class RaftDriver:
    def __init__(self, node_id: str, storage: Storage, transport: Transport,
                 apply: Callable[[Entry], Any], restore: Callable[[bytes], None],
                 take_snapshot: Callable[[], bytes],
                 founders: dict[str, Any] | None = None, snapshot_every: int = 8192,
                 tick_interval: float | None = 0.05, election_ticks: int = 10,
                 snapshot_interval: float = 0.0, rng: random.Random | None = None,
                 dropped: Counter[str] | None = None) -> None:
        """``founders`` (id -> member info) bootstraps a new cluster when the storage
        is empty; without it an empty server waits to be added to one. With
        ``tick_interval`` None the caller ticks (``tick()``), as a simulator does;
        such a driver knows no time, so it holds no lease and reports no contact age.
        ``rng`` (default: a fresh ``random.Random``) draws the election timeouts.
        ``dropped`` counts the frames refused, by reason; the transport may share it."""
        self.id = node_id
        self.founders = founders
        self.storage = storage
        # A child can write a snapshot only into files (memory would die with it).
        self.files = storage if forkable(storage) else None
        self.apply = apply
        self.restore = restore
        self.take_snapshot = take_snapshot
        self.snapshot_every = snapshot_every
        self.snapshot_interval = snapshot_interval
        self.last_snapshot = 0.0  # loop time of the last snapshot taken here
        self.tick_interval = tick_interval
        self.election_ticks = election_ticks
        self.rng = rng if rng is not None else random.Random()
        self.node: RaftNode | None = None
        self.transport = transport
        self.known_config = b""
        self.hints: dict[str, Any] = {}  # addresses learnt while joining
        self.senders: frozenset[str] = frozenset()  # whose frames are stepped in
        self.senders_key: tuple[int, bool, bytes] | None = None  # what they come from
        self.dropped: Counter[str] = dropped if dropped is not None else Counter()
        self.tick_times: deque[float] = deque(maxlen=4 * election_ticks)
        self.snapshots = SnapshotStats()
        self.waiting: dict[int, tuple[int, asyncio.Future[Any]]] = {}
        self.reads: dict[int, asyncio.Future[int]] = {}
        self.read_counter = 0
        self.applied_changed = asyncio.Event()
        self.role_changed = asyncio.Event()
        self.scheduled = False
        self.leader_changes = 0
        self.last_leader: str | None = None
        self.ticker: asyncio.Task[None] | None = None
        self.sync_thread: ThreadPoolExecutor | None = None  # made on the first use
        self.syncing: asyncio.Future[None] | None = None  # the leader's fsync in flight
        self.closing = False  # once set, nothing more is processed (stop, or a crash)
        self.background: BackgroundSnapshot | None = None  # a child writing a snapshot
        self.written: BackgroundSnapshot | None = None  # a snapshot the log can fold into

    @classmethod
    def on_disk(cls, node_id: str, listen: tuple[str, int] | None, directory: Path,
                apply: Callable[[Entry], Any], restore: Callable[[bytes], None],
                take_snapshot: Callable[[], bytes], founders: dict[str, Any] | None = None,
                snapshot_every: int = 8192, tick_interval: float = 0.05,
                election_ticks: int = 10, snapshot_interval: float = 0.0,
                tls: TransportTls | None = None) -> RaftDriver:
        """A server's driver: its log and snapshot in ``directory``, its messages over
        TCP on ``listen`` (None: a server alone, which listens for no one), in mutual
        TLS with ``tls`` (without it, in the clear: tests and benchmarks only)."""
        dropped: Counter[str] = Counter()
        transport = TcpTransport(node_id, listen, dropped, tls)
        return cls(node_id, RaftStorage(directory), transport,
                   apply, restore, take_snapshot, founders=founders,
                   snapshot_every=snapshot_every, tick_interval=tick_interval,
                   election_ticks=election_ticks, snapshot_interval=snapshot_interval,
                   dropped=dropped)

    def __repr__(self) -> str:
        return f"<RaftDriver {self.node!r}>"

    async def start(self) -> None:
        """Recover from storage (restoring the state machine from the snapshot), or
        bootstrap from ``founders``, then start ticking. Raises StorageError."""
        hard, snapshot, entries = self.storage.load()
        if snapshot is not None:
            self.restore(snapshot.data)
        self.node = RaftNode(self.id, self.rng, election_ticks=self.election_ticks,
                             term=hard.term, vote=hard.vote, snapshot=snapshot,
                             log=EntryLog.of(entries, snapshot.index if snapshot else 0),
                             commit=hard.commit)
        await self.transport.start(self.receive)
        if self.founders is not None:
            self.found(self.founders)
        self.follow_config()
        if self.tick_interval is not None:
            self.ticker = asyncio.get_running_loop().create_task(
                self.tick_loop(self.tick_interval))
        if self.node.peers == (self.id,):
            self.node.campaign(pre=True)  # alone: no reason to wait for a timeout
            self.process()

    @property
    def members(self) -> dict[str, Any]:
        """The configuration in force: id -> member info."""
        assert self.node is not None
        return config_members(self.node.config)

    def follow_config(self) -> None:
        """Point the transport at the members of the configuration in force."""
        assert self.node is not None
        if self.node.config != self.known_config or self.hints:
            self.known_config = self.node.config
            members = {**self.hints, **self.members}
            self.transport.set_peers(raft_addresses(members))

    def found(self, founders: dict[str, Any]) -> bool:
        """Bootstrap a new cluster now, unless this server already has one; returns
        whether it did."""
        node = self.node
        assert node is not None
        if node.last_index > 0 or self.members:
            return False
        node.found(founders)
        self.process()  # persist it before anything else happens
        self.follow_config()
        return True

    def learn(self, members: dict[str, Any], keep: bool = False) -> None:
        """Addresses of a cluster this empty server is joining, until its log has them;
        with ``keep``, added to those it knows. A server whose log lags behind the
        cluster's membership (it missed a server's addition, and that server now
        leads) learns the newer members this way from the servers it trusts, since it
        drops the frames of any server it does not know."""
        self.hints = {**self.hints, **members} if keep else dict(members)
        self.senders_key = None  # the senders are worked out again
        self.follow_config()

    def strangers(self) -> int:
        """How many frames from servers that are not members were dropped so far."""
        return self.dropped["not_member"]

    async def hand_over(self, timeout: float = 2.0, to: str | None = None) -> str | None:
        """Pass leadership to ``to`` (default: the most caught-up follower), e.g. on a
        clean shutdown, so the cluster does not wait out an election timeout. Returns
        the id it went to, or None if this node was not leader or it did not happen."""
        node = self.node
        others = [p for p in node.peers if p != self.id] if node is not None else []
        if node is None or node.role != Role.LEADER or not others:
            return None
        target = to or max(others, key=lambda p: (node.progress[p].match, p))
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
        self.closing = True
        self.abort_snapshot()
        while self.syncing is not None:
            await asyncio.wait([self.syncing])
        if self.sync_thread is not None:
            self.sync_thread.shutdown()
        self.storage.close()
        for _, future in self.waiting.values():
            if not future.done():
                # Proposed, so it may still commit: not a NotLeader, which would be
                # forwarded to the leader and could apply the write twice.
                future.set_exception(Unavailable("the server stopped before the write "
                                                 "committed; it may still commit"))

    @property
    def is_leader(self) -> bool:
        return self.node is not None and self.node.role == Role.LEADER

    async def tick_loop(self, interval: float) -> None:
        self.tick_times.append(asyncio.get_running_loop().time())
        while True:
            await asyncio.sleep(interval)
            self.tick()

    def tick(self) -> None:
        """One tick of the Raft clock: the tick loop's, or the caller's."""
        assert self.node is not None
        self.node.tick()
        if self.tick_interval is not None:  # when tick number node.ticks began
            self.tick_times.append(asyncio.get_running_loop().time())
        self.process()

    def has_lease(self) -> bool:
        """Whether this leader may serve a read from its own state: a majority heard
        from it at tick T, and none of them will vote for another leader before an
        election timeout of their ticks has passed since, which is no sooner in real
        time (a tick never comes early). Two ticks are kept as a margin."""
        node = self.node
        stamp = node.lease_stamp() if node is not None else None
        if node is None or stamp is None or self.tick_interval is None:
            return False
        if node.peers == (self.id,):
            return True
        age = node.ticks - stamp
        if age >= len(self.tick_times):
            return False
        started = self.tick_times[-1 - age]
        lease = (self.election_ticks - 2) * self.tick_interval
        return asyncio.get_running_loop().time() < started + lease

    def receive(self, m: Message) -> None:
        """Step a message in; the Ready comes once this turn of the loop is done, so the
        frames of one read (and the proposals of the same turn) share one fsync.
        A message from a server that is not a member of the configuration in force
        (nor of the cluster this server is being added to), or addressed to another
        server, is dropped and counted: one forged SNAPSHOT would otherwise replace
        the whole state and the term."""
        node = self.node
        if node is None:
            return
        reason = self.refusal(m)
        if reason is not None:
            self.drop(reason, m)
            return
        node.step(m)
        self.process_soon()

    def refusal(self, m: Message) -> str | None:
        """Why ``m`` may not be stepped in, or None."""
        assert self.node is not None
        if m.to != self.id:
            return "wrong_recipient"
        node = self.node
        key = (node.config_index, node.config_index <= node.commit, node.config)
        if key != self.senders_key:
            self.senders_key = key
            self.senders = self.trusted()
        return None if m.frm in self.senders else "not_member"

    def trusted(self) -> frozenset[str]:
        """Whose frames are stepped in: the members of the configuration in force,
        and while it is not yet committed those of the committed one too (a leader
        that removes itself leads until the change commits, thesis §4.2.2), and the
        members of the cluster this server was told it is joining."""
        node = self.node
        assert node is not None
        ids = {*self.hints, *config_members(node.config)}
        if node.config_index > node.commit:
            ids.update(config_members(node.config_at(min(node.commit,
                                                          node.config_index - 1))))
        return frozenset(ids - {self.id})

    def drop(self, reason: str, m: Message) -> None:
        self.dropped[reason] += 1
        count = self.dropped[reason]
        if count & (count - 1) == 0:  # the 1st, 2nd, 4th, 8th...: bounded log volume
            log.warning("dropped a raft %s frame from %r to %r: %s (%d so far)",
                        m.type.value, m.frm[:64], m.to[:64], reason.replace("_", " "),
                        count)

    async def propose(self, data: bytes) -> Any:
        """Commit ``data`` through Raft; returns what ``apply`` returned for it."""
        return await self.submit(data)

    def submit(self, data: bytes) -> asyncio.Future[Any]:
        """Propose ``data`` without waiting: the future ends as ``propose`` would.
        Raises NotLeader at once on a follower."""
        assert self.node is not None
        try:
            index = self.node.propose(data)
        except NotLeaderError as exc:
            raise not_leader(exc) from None
        return self.waiter(index)

    def waiter(self, index: int) -> asyncio.Future[Any]:
        assert self.node is not None
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self.waiting[index] = (self.node.term, future)
        self.process_soon()
        return future

    async def change_members(self, members: dict[str, Any]) -> int:
        """Commit a configuration that adds or removes one server; returns its index.
        Raises NotLeader, or ConfigError when the change may not be made now."""
        index: int = await self.submit_members(members)
        return index

    def submit_members(self, members: dict[str, Any]) -> asyncio.Future[Any]:
        """``change_members`` without waiting: the future ends with the index."""
        assert self.node is not None
        try:
            index = self.node.propose_config(members)
        except NotLeaderError as exc:
            raise not_leader(exc) from None
        except ConfigChangeError as exc:
            raise ConfigError(str(exc), "members") from None
        self.follow_config()
        return self.waiter(index)

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
            raise not_leader(exc) from None
        future: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        self.reads[context] = future
        self.process()
        index = await future
        await self.applied_to(index)
        return index

    async def applied_to(self, index: int) -> None:
        """Return once entries up to ``index`` are applied here."""
        assert self.node is not None
        while self.node.applied < index:
            self.applied_changed.clear()
            await self.applied_changed.wait()

    async def lease_read(self) -> bool:
        """Serve a read under the lease if this leader holds one: wait until what it
        knows committed is applied. False without a lease."""
        if not self.has_lease():
            return False
        assert self.node is not None
        await self.applied_to(self.node.commit)
        return True

    def compact(self) -> None:
        """Snapshot the state machine at the applied index, in a forked child if the
        storage allows; the log is folded into it once the child has written it
        (``fold_snapshot``)."""
        node = self.node
        assert node is not None
        if self.background is not None or self.written is not None:
            return
        index = node.applied
        if index <= node.offset:
            return
        self.last_snapshot = asyncio.get_running_loop().time()
        files = self.files
        if files is not None:
            term, config = node.term_at(index), node.config_at(index)

            def write() -> None:  # in the child
                files.write_snapshot(Snapshot(index, term, config, self.take_snapshot()))
            try:
                self.background = BackgroundSnapshot(index, write, self.snapshot_written)
                return
            except OSError as exc:  # e.g. no memory to fork under strict overcommit
                log.warning("cannot fork to write a snapshot (%s); writing it here", exc)
        self.snapshot_here(index)

    def snapshot_here(self, index: int) -> None:
        """Snapshot at applied ``index`` on the loop, and compact the log at once."""
        node = self.node
        assert node is not None
        started = time.perf_counter()
        node.compact(index, self.take_snapshot())
        assert node.snapshot is not None
        self.storage.save_snapshot(node.snapshot, node.entries(node.offset + 1, node.stable + 1))
        self.snapshots.record(len(node.snapshot.data), time.perf_counter() - started)

    def snapshot_written(self, job: BackgroundSnapshot, ok: bool) -> None:
        self.background = None
        if ok:
            self.written = job
            self.process_soon()

    def fold_snapshot(self) -> None:
        """The child wrote its snapshot: the log up to it goes (between Readies, with no
        fsync in flight, so every entry written so far is stable)."""
        node = self.node
        job, self.written = self.written, None
        files = self.files
        assert node is not None and job is not None and files is not None
        snapshot = files.read_snapshot()
        if snapshot is None or snapshot.index != job.index:
            log.error("the snapshot file does not hold the snapshot at index %d; "
                      "the log stays as it is", job.index)
            return
        if not node.offset < job.index <= node.applied:
            return  # overtaken, by a snapshot from the leader
        node.compact(job.index, snapshot.data)
        assert node.snapshot is not None
        files.replace_log(node.snapshot, node.entries(node.offset + 1, node.stable + 1))
        self.snapshots.record(len(snapshot.data), job.seconds)
        log.info("snapshot at index %d (%d bytes, %.0f ms in a child); log compacted",
                 node.offset, len(snapshot.data), job.seconds * 1000)

    def abort_snapshot(self) -> None:
        """Stop a snapshot being written in the background, and forget one written."""
        if self.background is not None and self.files is not None:
            self.background.abort()
            self.background = None
            self.files.discard_snapshot_in_progress()
        self.written = None

    def peer_contact(self, peer: str) -> float | None:
        """Seconds since ``peer`` last answered this leader (None if not leading)."""
        node = self.node
        if node is None or node.role != Role.LEADER or self.tick_interval is None:
            return None
        if peer == self.id:
            return 0.0
        progress = node.progress.get(peer)
        return (node.ticks - progress.heard) * self.tick_interval if progress else None

    def last_contact(self) -> float | None:
        """Seconds since this node last heard from a leader (0 on the leader); None if
        it knows of none, or counts no time."""
        node = self.node
        if node is None or node.leader is None or self.tick_interval is None:
            return None
        return 0.0 if node.role == Role.LEADER else node.elapsed * self.tick_interval

    def process(self) -> None:
        node = self.node
        assert node is not None
        if self.syncing is not None or self.closing:  # this Ready waits for the fsync
            return
        if self.written is not None:
            self.fold_snapshot()
        for _ in range(10):
            ready = node.ready()
            if ready.empty():
                break
            if ready.snapshot is not None:                         # 1. persist
                self.abort_snapshot()  # the child must not write over this one
                started = time.perf_counter()
                self.storage.save_snapshot(ready.snapshot, [])
                self.restore(ready.snapshot.data)
                self.snapshots.record(len(ready.snapshot.data),
                                      time.perf_counter() - started, installed=True)
                log.info("installed a snapshot at index %d from %s", ready.snapshot.index,
                         node.leader)
            later = self.may_sync_later(ready)
            unsynced = self.storage.save(ready.hard_state, ready.entries, sync=not later)
            self.send_and_apply(ready)
            if later and unsynced:
                self.sync_in_background(ready)
                return
            self.advance(ready)
        self.after_role_change()

    def may_sync_later(self, ready: Ready) -> bool:
        """A leader's own appends need not be durable before it sends them (thesis
        §10.2.1): it counts its copy towards commitment only once they are. Anything
        that changes the term or vote, or installs a snapshot, is durable first."""
        assert self.node is not None
        return (self.node.role == Role.LEADER and ready.snapshot is None
                and (ready.hard_state is None or not self.storage.changes_vote(ready.hard_state)))

    def sync_in_background(self, ready: Ready) -> None:
        """fsync on a thread while the loop takes more requests, which the next Ready
        carries together; ``ready`` is advanced (the entries counted as persisted)
        when the fsync returns."""
        if self.sync_thread is None:
            self.sync_thread = ThreadPoolExecutor(1, thread_name_prefix="raft-fsync")
        loop = asyncio.get_running_loop()
        self.syncing = loop.run_in_executor(self.sync_thread, self.storage.sync)
        self.syncing.add_done_callback(lambda done: self.synced(ready, done))

    def synced(self, ready: Ready, done: asyncio.Future[None]) -> None:
        self.syncing = None
        if done.cancelled():
            return
        error = done.exception()
        if error is not None:
            # What was written may not be on disk: going on could acknowledge writes a
            # crash would lose. Stop the server instead.
            log.critical("fsync of the raft log failed: %s; stopping", error)
            raise SystemExit(f"meshlet: fsync of the raft log failed: {error}")
        self.advance(ready)
        self.process()

    def send_and_apply(self, ready: Ready) -> None:
        node = self.node
        assert node is not None
        if ready.entries or ready.snapshot is not None:
            self.follow_config()
        for m in ready.messages:                                   # 2. send
            self.transport.send(m)
        for entry in ready.committed:                              # 3. apply
            # A configuration is the driver's, not the state machine's: its waiter
            # (change_members) gets its index.
            result = self.apply_committed(entry) if entry.kind != CONFIG else entry.index
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

    def apply_committed(self, entry: Entry) -> Any:
        """Apply one committed entry. One that cannot be applied stops the server: it
        would otherwise serve a state behind the log it has acknowledged (a broken
        invariant, an AssertionError, propagates as it is)."""
        try:
            return self.apply(entry)
        except AssertionError:
            raise
        except Exception as exc:
            log.critical("cannot apply raft log entry %d: %s; stopping", entry.index, exc)
            raise SystemExit(f"meshlet: cannot apply raft log entry {entry.index}: "
                             f"{exc}") from None

    def advance(self, ready: Ready) -> None:
        node = self.node
        assert node is not None
        node.advance(ready)                                        # 4. advance
        if node.leader is not None and node.leader != self.last_leader:
            self.leader_changes += 1
            self.last_leader = node.leader
        if ready.committed:
            self.applied_changed.set()
        if snapshot_due(node.applied - node.offset, self.snapshot_every,
                        asyncio.get_running_loop().time() - self.last_snapshot,
                        self.snapshot_interval):
            self.compact()

    def after_role_change(self) -> None:
        node = self.node
        assert node is not None
        if node.role != Role.LEADER:
            self.role_changed.set()
            for read in self.reads.values():
                if not read.done():
                    read.set_exception(NotLeader("leadership lost during a read"))
            self.reads.clear()
            for index, (term, future) in list(self.waiting.items()):
                if term < node.term and not future.done():
                    future.set_exception(Unavailable(  # not forwarded: see stop()
                        "leadership lost before commit; the write may still commit"))
                    del self.waiting[index]

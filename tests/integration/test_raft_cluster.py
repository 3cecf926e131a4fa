"""Three Raft drivers on loopback TCP with real storage: election, replication,
failover, and a restart that recovers from disk and catches up."""

from __future__ import annotations

import asyncio
import json
import os
import socket
import threading
import time
from pathlib import Path

import pytest

from meshlet.errors import NotLeader, StorageError
from meshlet.raft.core import CONFIG, Entry, HardState, Snapshot, encode_config
from meshlet.raft.driver import RaftDriver
from meshlet.raft.storage import RaftStorage
from tests.conftest import async_wait_until


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Member:
    def __init__(self, node_id: str, peers: dict[str, tuple[str, int]], root: Path) -> None:
        self.id = node_id
        self.peers = peers
        self.root = root
        self.applied: list[bytes] = []
        self.driver = self.make()

    def make(self) -> RaftDriver:
        self.applied = []
        founders = {p: {"raft": f"{h}:{port}"} for p, (h, port) in self.peers.items()}
        return RaftDriver.on_disk(self.id, self.peers[self.id], self.root / self.id,
                                  self.apply, self.restore, self.snapshot, founders,
                                  snapshot_every=8, tick_interval=0.02)

    def apply(self, entry: Entry) -> int:
        if entry.data:
            self.applied.append(entry.data)
        return entry.index

    def snapshot(self) -> bytes:
        return json.dumps([a.decode() for a in self.applied]).encode()

    def restore(self, data: bytes) -> None:
        self.applied = [a.encode() for a in json.loads(data)] if data else []


async def leader_of(members: list[Member]) -> Member:
    async def find() -> Member | None:
        leaders = [m for m in members if m.driver.is_leader]
        return leaders[0] if len(leaders) == 1 else None
    return await async_wait_until(find, 20, "a single leader")


async def test_replicate_fail_over_and_recover(tmp_path: Path) -> None:
    peers = {f"s{i}": ("127.0.0.1", free_port()) for i in range(3)}
    members = [Member(i, peers, tmp_path) for i in sorted(peers)]
    for m in members:
        await m.driver.start()
    try:
        leader = await leader_of(members)
        indexes = await asyncio.gather(*(leader.driver.propose(f"w{i}".encode())
                                         for i in range(30)))
        assert indexes == sorted(indexes)
        expected = [f"w{i}".encode() for i in range(30)]

        async def everyone_has(n: int, group: list[Member]) -> bool:
            return all(len(m.applied) >= n for m in group)
        await async_wait_until(lambda: everyone_has(30, members), 20, "replication")
        assert all(m.applied[:30] == expected for m in members)

        follower = next(m for m in members if m is not leader)
        with pytest.raises(NotLeader):
            await follower.driver.propose(b"to a follower")
        with pytest.raises(NotLeader):
            await follower.driver.read_index()
        # A linearizable read point covers every acknowledged write, applied here.
        read_at = await leader.driver.read_index()
        assert read_at >= max(indexes) and len(leader.applied) >= 30
        assert follower.driver.last_contact() is not None

        async def leased() -> bool:
            return leader.driver.has_lease()
        await async_wait_until(leased, 10, "the leader's lease")  # renewed by heartbeats
        assert not follower.driver.has_lease()

        handed_to = await leader.driver.hand_over()  # a clean shutdown hands over first
        await leader.driver.stop()
        assert handed_to is not None
        rest = [m for m in members if m is not leader]
        new_leader = await leader_of(rest)
        assert new_leader.id == handed_to
        await new_leader.driver.propose(b"after failover")
        await async_wait_until(lambda: everyone_has(31, rest), 20, "failover write")

        leader.driver = leader.make()  # restart from disk
        await leader.driver.start()
        await async_wait_until(lambda: everyone_has(31, members), 20, "catch-up")
        assert all(m.applied == [*expected, b"after failover"] for m in members)
    finally:
        for m in members:
            await m.driver.stop()


def test_storage_round_trip_truncation_and_torn_tail(tmp_path: Path) -> None:
    s = RaftStorage(tmp_path)
    s.load()
    s.save(HardState(1, "a", 0), [Entry(1, 1, b"x"), Entry(1, 2, b"y"), Entry(1, 3, b"z")])
    s.save(HardState(2, "b", 2), [Entry(2, 2, b"Y")])  # a new leader overwrote 2..
    s.close()
    s = RaftStorage(tmp_path)
    hard, snapshot, entries = s.load()
    assert hard == HardState(2, "b", 2) and snapshot is None
    assert entries == [Entry(1, 1, b"x"), Entry(2, 2, b"Y")]
    s.save(None, [Entry(2, 3, b"more")])
    s.close()
    segment = sorted((tmp_path / "raft-log").glob("*.wal"))[-1]
    segment.write_bytes(segment.read_bytes()[:-3])  # torn last record
    assert RaftStorage(tmp_path).load()[2] == [Entry(1, 1, b"x"), Entry(2, 2, b"Y")]
    raw = bytearray(segment.read_bytes())
    raw[12] ^= 0xFF  # corrupt the first record
    segment.write_bytes(bytes(raw))
    with pytest.raises(StorageError):
        RaftStorage(tmp_path).load()


def test_storage_keeps_entries_written_after_the_founding_snapshot(tmp_path: Path) -> None:
    s = RaftStorage(tmp_path)
    s.load()
    founding = Snapshot(0, 0, encode_config({"a": {}}))
    s.save_snapshot(founding, [])  # a new server writes its founding configuration first
    s.save(HardState(1, "a", 2), [Entry(1, 1, b"x"), Entry(1, 2, b"y")])
    s.close()
    assert RaftStorage(tmp_path).load() == (HardState(1, "a", 2), founding,
                                            [Entry(1, 1, b"x"), Entry(1, 2, b"y")])


def test_storage_snapshot_replaces_the_log_even_across_a_crash(tmp_path: Path) -> None:
    s = RaftStorage(tmp_path)
    s.load()
    s.save(HardState(1, "a", 4), [Entry(1, i, f"e{i}".encode()) for i in range(1, 7)])
    old_segments = sorted((tmp_path / "raft-log").glob("*.wal"))
    kept = [Entry(1, 5, b"e5"), Entry(1, 6, b"e6")]
    snap = Snapshot(4, 1, encode_config({"a": {}}), b"state at 4")
    s.save_snapshot(snap, kept)
    s.save(None, [Entry(2, 7, b"e7", CONFIG)])
    s.close()
    assert not any(p.exists() for p in old_segments)
    hard, loaded, entries = RaftStorage(tmp_path).load()
    assert loaded == snap and entries == [*kept, Entry(2, 7, b"e7", CONFIG)]
    assert hard.commit == 4

    # A crash after the new segment was written but before the old ones were deleted:
    # both are on disk, and they replay to the same log.
    fresh = tmp_path / "again"
    s = RaftStorage(fresh)
    s.load()
    s.save(HardState(1, "a", 4), [Entry(1, i, f"e{i}".encode()) for i in range(1, 7)])
    old = {p: p.read_bytes() for p in (fresh / "raft-log").glob("*.wal")}
    s.save_snapshot(snap, kept)
    s.close()
    for path, data in old.items():
        path.write_bytes(data)
    assert RaftStorage(fresh).load()[1:] == (snap, kept)


async def test_a_leader_acknowledges_only_after_its_fsync_returns(tmp_path: Path) -> None:
    """The leader's fsync runs on a thread; alone, its own copy is the majority, so a
    write must wait for that fsync. A slow disk is the fault simulated here."""
    me = {"solo": ("127.0.0.1", free_port())}
    member = Member("solo", me, tmp_path)
    driver = member.driver
    await driver.start()
    try:
        await async_wait_until(lambda: _true(driver.is_leader), 10, "leadership")
        real_sync = driver.storage.sync
        started, release = threading.Event(), threading.Event()

        def slow_sync() -> None:
            started.set()
            release.wait(10)
            real_sync()
        driver.storage.sync = slow_sync  # type: ignore[method-assign]
        write = asyncio.ensure_future(driver.propose(b"held"))
        await async_wait_until(lambda: _true(started.is_set()), 10, "the fsync to start")
        more = asyncio.ensure_future(driver.propose(b"meanwhile"))
        for _ in range(50):  # the loop keeps turning while the disk is busy
            await asyncio.sleep(0)
        assert not write.done() and not more.done()
        assert b"held" not in member.applied
        release.set()
        assert await asyncio.wait_for(write, 10) < await asyncio.wait_for(more, 10)
        assert member.applied[-2:] == [b"held", b"meanwhile"]
    finally:
        await driver.stop()


async def _true(value: bool) -> bool:
    return value


async def lead_and_write(driver: RaftDriver, writes: int) -> None:
    """Wait for a started one-server driver to lead, then commit ``writes`` entries."""
    await async_wait_until(lambda: _true(driver.is_leader), 10, "leadership")
    await asyncio.gather(*(driver.propose(f"w{i}".encode()) for i in range(writes)))


class SlowSnapshotMember(Member):
    """Its state takes a second to serialise, and it notes who serialised it."""

    def snapshot(self) -> bytes:
        (self.root / f"serialised-by-{os.getpid()}").touch()
        time.sleep(1.0)  # a large state being serialised (in the forked child)
        return super().snapshot()


async def test_a_snapshot_is_written_by_a_child_while_writes_go_on(tmp_path: Path) -> None:
    member = SlowSnapshotMember("solo", {"solo": ("127.0.0.1", free_port())}, tmp_path)
    driver = member.driver
    await driver.start()
    try:
        await lead_and_write(driver, 10)
        await async_wait_until(lambda: _true(driver.background is not None), 10,
                               "a snapshot to start")
        during = [await driver.propose(f"d{i}".encode()) for i in range(20)]
        assert driver.background is not None  # all 20 committed while the child works
        assert driver.node is not None and driver.node.offset == 0
        await async_wait_until(lambda: _true(driver.node.offset > 0), 10, "the log folded")
        writers = [p.name for p in tmp_path.glob("serialised-by-*")]
        assert writers and f"serialised-by-{os.getpid()}" not in writers
        snapshot = driver.storage.read_snapshot()
        assert snapshot is not None and snapshot.index == driver.node.offset < during[-1]
    finally:
        await driver.stop()


async def test_stopping_kills_a_snapshot_child_and_leaves_no_temp_file(
        tmp_path: Path) -> None:
    member = SlowSnapshotMember("solo", {"solo": ("127.0.0.1", free_port())}, tmp_path)
    driver = member.driver
    await driver.start()
    await lead_and_write(driver, 10)
    await async_wait_until(lambda: _true(driver.background is not None), 10,
                           "a snapshot to start")
    assert driver.background is not None
    child = driver.background.pid
    await driver.stop()
    with pytest.raises(ChildProcessError):
        os.waitpid(child, os.WNOHANG)  # killed and reaped
    assert not list((tmp_path / "solo").glob("snapshot.bin*"))


async def test_a_server_that_cannot_fork_snapshots_on_its_loop(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """fork can fail (strict overcommit, a process limit); simulated here."""
    def no_fork() -> int:
        raise OSError(12, "Cannot allocate memory")
    monkeypatch.setattr(os, "fork", no_fork)
    member = Member("solo", {"solo": ("127.0.0.1", free_port())}, tmp_path)
    driver = member.driver
    await driver.start()
    try:
        await lead_and_write(driver, 12)
        await async_wait_until(lambda: _true(driver.node.offset > 0), 10, "compaction")
        assert driver.background is None  # nothing forked
        snapshot = driver.storage.read_snapshot()
        assert snapshot is not None and snapshot.index == driver.node.offset
    finally:
        await driver.stop()

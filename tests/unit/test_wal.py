"""The command log and snapshot store: torn tails, corruption, compaction, recovery,
and segments or a snapshot that are not regular files of ours."""

from __future__ import annotations

import asyncio
import os
import pwd
from pathlib import Path

import pytest

from meshlet.errors import Conflict, StorageError
from meshlet.raft.wal import HEADER, CommandLog, LogRecord, SnapshotStore
from meshlet.server.raft_node import PeerAddress, RaftServerNode
from meshlet.state import COMMANDS
from meshlet.state.commands import KVPut
from tests.conftest import async_wait_until


def write(log_dir: Path, n: int) -> Path:
    log = CommandLog(log_dir)
    list(log.recover())
    log.append([LogRecord(i, COMMANDS.to_dict(KVPut(f"k{i}", b"v"))) for i in range(1, n + 1)])
    log.close()
    return log.segments()[-1]


def recover(log_dir: Path) -> list[int]:
    log = CommandLog(log_dir)
    indexes = [r.index for r in log.recover()]
    log.close()
    return indexes


def test_records_survive_reopen(tmp_path: Path) -> None:
    write(tmp_path, 5)
    assert recover(tmp_path) == [1, 2, 3, 4, 5]


@pytest.mark.parametrize("cut", [1, 3, HEADER.size, HEADER.size + 5])
def test_torn_last_record_is_truncated(tmp_path: Path, cut: int) -> None:
    segment = write(tmp_path, 3)
    data = segment.read_bytes()
    one = len(data) // 3
    segment.write_bytes(data[: 2 * one + cut])  # the third record is torn
    assert recover(tmp_path) == [1, 2]
    assert segment.stat().st_size == 2 * one
    # The log accepts appends after the truncation and they survive.
    log = CommandLog(tmp_path)
    list(log.recover())
    log.append([LogRecord(3, COMMANDS.to_dict(KVPut("new", b"x")))])
    log.close()
    assert recover(tmp_path) == [1, 2, 3]


def test_checksum_mismatch_on_last_record_is_a_torn_write(tmp_path: Path) -> None:
    segment = write(tmp_path, 3)
    data = bytearray(segment.read_bytes())
    data[-2] ^= 0xFF
    segment.write_bytes(bytes(data))
    assert recover(tmp_path) == [1, 2]


def test_checksum_mismatch_in_the_middle_refuses_to_start(tmp_path: Path) -> None:
    segment = write(tmp_path, 3)
    data = bytearray(segment.read_bytes())
    data[HEADER.size + 3] ^= 0xFF  # inside the first record's payload
    segment.write_bytes(bytes(data))
    with pytest.raises(StorageError, match="corrupt at byte 0: checksum mismatch"):
        recover(tmp_path)


def test_snapshot_store_atomic_and_checked(tmp_path: Path) -> None:
    store = SnapshotStore(tmp_path)
    assert store.load() is None
    store.save(b"state-1")
    (tmp_path / "snapshot.bin.tmp").write_bytes(b"half-written")  # crash mid-save
    assert store.load() == b"state-1"
    assert not (tmp_path / "snapshot.bin.tmp").exists()
    raw = bytearray(store.path.read_bytes())
    raw[-1] ^= 0xFF
    store.path.write_bytes(bytes(raw))
    with pytest.raises(StorageError):
        store.load()


@pytest.mark.parametrize("which", ["last", "earlier"])
def test_a_symlinked_segment_is_refused_and_its_target_left_as_it_was(
        tmp_path: Path, which: str) -> None:
    """Recovery read segments by path and truncated a torn last one by path: a link
    planted in the directory sent both to a file elsewhere."""
    log_dir = tmp_path / "raft-log"
    first = write(log_dir, 3)
    log = CommandLog(log_dir)
    list(log.recover())
    later = log.start_segment(4)
    log.append([LogRecord(4, COMMANDS.to_dict(KVPut("k4", b"v")))])
    log.close()
    segment = later if which == "last" else first
    target = tmp_path / "elsewhere.wal"
    target.write_bytes(segment.read_bytes() + b"torn")  # recovery would cut "torn" off
    before = target.read_bytes()
    segment.unlink()
    segment.symlink_to(target)
    with pytest.raises(StorageError, match=f"refusing file {segment}: it is a symbolic link"):
        recover(log_dir)
    assert target.read_bytes() == before


def test_a_segment_that_is_not_a_regular_file_is_refused(tmp_path: Path) -> None:
    write(tmp_path, 2)
    (tmp_path / "log-00000000000000000003.wal").mkdir()
    with pytest.raises(StorageError, match=r"log-00000000000000000003\.wal: it is not a regular"):
        recover(tmp_path)


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root: gives a file to `nobody`")
def test_a_segment_another_user_owns_is_refused_and_left_as_it_was(tmp_path: Path) -> None:
    segment = write(tmp_path, 2)
    segment.write_bytes(segment.read_bytes() + b"torn")
    before = segment.read_bytes()
    os.chown(segment, pwd.getpwnam("nobody").pw_uid, -1)
    with pytest.raises(StorageError, match=f"file {segment}: it is owned by nobody"):
        recover(tmp_path)
    assert segment.read_bytes() == before


def test_a_symlinked_snapshot_is_refused(tmp_path: Path) -> None:
    store = SnapshotStore(tmp_path)
    store.save(b"state-1")
    target = tmp_path / "elsewhere.bin"
    store.path.rename(target)
    store.path.symlink_to(target)
    with pytest.raises(StorageError, match=r"snapshot\.bin: it is a symbolic link"):
        store.load()


async def test_a_server_alone_snapshots_compacts_and_recovers(tmp_path: Path) -> None:
    me = PeerAddress(None, "http://127.0.0.1:1")
    node = RaftServerNode(tmp_path, "solo", me, {"solo": me}, snapshot_every=10)
    await node.open()
    await asyncio.gather(*(node.propose(KVPut(f"k{i}", str(i).encode())) for i in range(25)))
    with pytest.raises(Conflict):
        await node.propose(KVPut("k0", b"x", cas=999))

    async def compacted_past_20() -> bool:  # a forked child writes the snapshot
        driver = node.driver.node
        if driver is not None and driver.offset < 20:
            await node.propose(KVPut("more", b"1"))  # another write: another snapshot
        return driver is not None and driver.offset >= 20
    await async_wait_until(compacted_past_20, 10, "a snapshot at index 20 or later")
    await node.stop()
    raft_dir = tmp_path / "raft"
    assert (raft_dir / "snapshot.bin").exists()
    assert len(list((raft_dir / "raft-log").glob("*.wal"))) == 1  # older ones compacted
    assert node.driver.node is not None and node.driver.node.offset >= 20

    again = RaftServerNode(tmp_path, "solo", me, None)  # the directory has the cluster
    await again.open()
    assert again.machine.snapshot() == node.machine.snapshot()
    assert again.machine.kv["k24"].value == b"24"
    result = await again.propose(KVPut("after", b"1"))
    assert result.index > node.machine.index
    await again.stop()


def test_raft_entries_are_stored_as_bytes_and_older_base64_records_still_load(
        tmp_path: Path) -> None:
    from meshlet.raft.core import Entry, HardState
    from meshlet.raft.storage import RaftStorage
    storage = RaftStorage(tmp_path)
    storage.load()
    storage.save(HardState(2, "a", 0), [Entry(2, 1, b"\x00binary\xff"), Entry(2, 2, b"{}")])
    storage.close()
    # An entry written by an earlier version: JSON, with its data in base64.
    log = CommandLog(tmp_path / "raft-log")
    list(log.recover())
    log.append([LogRecord(log.last_index + 1, {"op": "entry", "term": 2, "index": 3,
                                               "kind": 0, "data": "aGVsbG8="})])
    log.close()
    again = RaftStorage(tmp_path)
    hard, _, entries = again.load()
    assert hard == HardState(2, "a", 0)
    assert [(e.index, e.data) for e in entries] == [
        (1, b"\x00binary\xff"), (2, b"{}"), (3, b"hello")]
    again.close()

"""A committed entry that cannot be applied stops the server, and is never blamed on
the client that happened to be asking."""

from __future__ import annotations

from pathlib import Path

import pytest

from meshlet.errors import StorageError
from meshlet.raft.core import Entry
from meshlet.raft.driver import RaftDriver
from meshlet.raft.memory import MemoryNetwork, MemoryStorage, MemoryTransport
from meshlet.server.raft_node import PeerAddress, RaftServerNode


@pytest.mark.parametrize("data", [b'{"type":"launch_missiles"}', b"\xff not json",
                                  b'{"type":"kv_put","key":"k","value":"not base64!"}'])
def test_an_entry_that_holds_no_command_is_a_storage_error(tmp_path: Path,
                                                           data: bytes) -> None:
    node = RaftServerNode(tmp_path, "s1", PeerAddress(None, "http://127.0.0.1:1"))
    with pytest.raises(StorageError, match="raft log entry 7 holds no command"):
        node.apply_entry(Entry(1, 7, data))
    assert node.machine.index == 0  # nothing applied


async def test_a_committed_entry_that_cannot_be_applied_stops_the_driver() -> None:
    applied: list[int] = []

    def apply(entry: Entry) -> None:
        if entry.data == b"bad":
            raise StorageError("cannot decode")
        applied.append(entry.index)

    driver = RaftDriver("a", MemoryStorage(), MemoryTransport("a", MemoryNetwork()), apply,
                        lambda data: None, lambda: b"", founders={"a": {}},
                        tick_interval=None)
    await driver.start()
    assert driver.is_leader
    driver.submit(b"bad")
    try:
        with pytest.raises(SystemExit, match="cannot apply raft log entry 3: cannot decode"):
            driver.process()
    finally:
        driver.closing = True  # the scheduled turn must not apply it again
    assert applied == [2]  # the leader's own empty entry, then nothing


async def test_a_broken_invariant_propagates_as_it_is() -> None:
    def apply(entry: Entry) -> None:
        if entry.data:
            raise AssertionError("safety")

    driver = RaftDriver("a", MemoryStorage(), MemoryTransport("a", MemoryNetwork()), apply,
                        lambda data: None, lambda: b"", founders={"a": {}},
                        tick_interval=None)
    await driver.start()
    driver.submit(b"x")
    try:
        with pytest.raises(AssertionError, match="safety"):
            driver.process()
    finally:
        driver.closing = True

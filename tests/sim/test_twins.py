"""The in-memory twins keep the contracts of the real storage and transport, so what
the simulator shows of the driver holds for the server too."""

from __future__ import annotations

from pathlib import Path

from meshlet.raft.core import CONFIG, Entry, HardState, Message, MsgType, Snapshot, encode_config
from meshlet.raft.interfaces import Storage, forkable
from meshlet.raft.memory import MemoryNetwork, MemoryStorage, MemoryTransport
from meshlet.raft.storage import RaftStorage
from tests.sim.cluster import SimCluster, elect


def history(storage: Storage) -> None:
    """Saves, a conflicting suffix overwritten, a snapshot, more saves."""
    storage.load()
    storage.save(HardState(1, "a", 0), [Entry(1, i, f"e{i}".encode()) for i in (1, 2, 3)])
    assert storage.changes_vote(HardState(2, "b", 0))
    assert not storage.changes_vote(HardState(1, "a", 3))
    storage.save(HardState(2, "b", 2), [Entry(2, 2, b"E2")])  # a new leader's entry at 2
    storage.save(None, [Entry(2, 3, b"E3"), Entry(2, 4, b"e4", CONFIG)])
    storage.save_snapshot(Snapshot(2, 2, encode_config({"a": {}}), b"state at 2"),
                          [Entry(2, 3, b"E3"), Entry(2, 4, b"e4", CONFIG)])
    storage.save(HardState(3, "a", 4), [Entry(3, 5, b"e5")])


def test_memory_storage_loads_what_the_disk_would(tmp_path: Path) -> None:
    disk, memory = RaftStorage(tmp_path), MemoryStorage()
    history(disk)
    history(memory)
    disk.close()
    assert RaftStorage(tmp_path).load() == memory.load()
    hard, snapshot, entries = memory.load()
    assert hard == HardState(3, "a", 4) and snapshot is not None and snapshot.index == 2
    assert [e.index for e in entries] == [3, 4, 5]


def test_only_files_take_snapshots_from_a_forked_child(tmp_path: Path) -> None:
    assert forkable(RaftStorage(tmp_path))
    assert not forkable(MemoryStorage())


async def test_the_memory_network_delivers_only_to_who_is_attached() -> None:
    network = MemoryNetwork()
    got: list[Message] = []
    a, b = MemoryTransport("a", network), MemoryTransport("b", network)
    await a.start(got.append)
    await b.start(lambda m: None)
    m = Message(MsgType.APPEND, "b", "a", 1)
    b.send(m)
    assert network.in_flight == [m] and not got  # held until its owner delivers it
    assert network.deliver(network.in_flight.pop()) and got == [m]
    await a.stop()
    assert not network.deliver(m) and got == [m]  # lost: nobody is there


async def test_a_simulated_driver_needs_no_thread_and_no_fork() -> None:
    sim = await SimCluster.start(["a", "b", "c"], seed=21)
    leader = elect(sim)
    for i in range(5):
        sim.submit(leader.id, f"w{i}".encode())
    while sim.network:
        sim.deliver(0)
    sim.compact(leader.id)
    driver = sim.drivers[leader.id]
    assert driver.node is not None and driver.node.offset > 0  # compacted on the loop
    assert driver.background is None and driver.sync_thread is None
    assert sim.disks[leader.id].snapshot == driver.node.snapshot
    await sim.close()

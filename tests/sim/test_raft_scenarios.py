"""Targeted Raft scenarios the random schedules reach only by luck: the Figure 8 commit
rule, catching up by snapshot, membership changes one server at a time, an old
leader's write refused as NotLeader, a crash right after a send. They run on the
simulated cluster of real drivers; where a scenario is a script of the core's rules
(Figure 8, leases, pre-vote replies) it also steps or inspects the core."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from meshlet.errors import ConfigError, NotLeader
from meshlet.raft.core import Entry, Message, MsgType, Role, config_members
from meshlet.raft.entry_log import EntryLog
from meshlet.raft.memory import MemoryStorage
from tests.sim.cluster import SimCluster, elect


def settle(sim: SimCluster, rounds: int = 50) -> None:
    """Deliver everything in order, ticking everyone between rounds."""
    for _ in range(rounds):
        while sim.network:
            sim.deliver(0)
        for node_id in sim.ids:
            sim.tick(node_id)
        sim.check()


def write(sim: SimCluster, count: int) -> int:
    """Commit ``count`` writes through the leader's driver; the index of the last."""
    leader = elect(sim)
    writes = [sim.submit(leader.id, f"w{i}".encode()) for i in range(count)]
    settle(sim, 5)
    return int(acknowledged(writes[-1]))


def acknowledged(future: asyncio.Future[Any]) -> Any:
    """The driver answered the proposer, with a result."""
    assert future.done() and future.exception() is None, future
    return future.result()


async def test_figure_8_an_old_term_entry_on_a_majority_is_not_committed_by_counting() -> None:
    """§5.4.2: a leader of term 4 holding an entry of term 2 on a majority must not
    commit it by counting, since a server with a term-3 entry there could still win an
    election and overwrite it. It commits only with an entry of term 4 above it."""
    sim = await SimCluster.start([f"s{i}" for i in range(1, 6)], seed=8)
    s1 = sim.nodes["s1"]
    s1.term, s1.vote = 4, "s1"  # it won term 4 with its own vote
    s1.log = EntryLog.of([*s1.entries(1, 2), Entry(2, 2, b"from term 2")])  # founding, term 2
    s1.stable = 2
    s1.commit = 1
    sim.disks["s1"].save(None, s1.entries(2, 3))  # what it would hold on disk
    s1.become_leader()  # appends its own empty entry of term 4 at index 3
    sim.process("s1")
    for follower in ("s2", "s3"):
        s1.step(Message(MsgType.APPEND_RESP, follower, "s1", 4, index=2))
    sim.process("s1")
    assert s1.commit == 1, "an entry of term 2 was committed by counting in term 4"
    for follower in ("s2", "s3"):
        s1.step(Message(MsgType.APPEND_RESP, follower, "s1", 4, index=3))
    assert s1.commit == 3  # the term-4 entry commits, and with it everything before


async def test_a_lagging_follower_catches_up_from_a_snapshot() -> None:
    sim = await SimCluster.start(["a", "b", "c"], seed=9)
    leader = elect(sim)
    lagging = next(i for i in sim.ids if i != leader.id)
    for other in sim.ids:
        if other != lagging:
            sim.cut.add(frozenset((lagging, other)))
    last = write(sim, 40)
    sim.compact(leader.id)
    assert leader.offset == last and len(leader.log) == 0  # the log is folded away
    while sim.network:  # what was sent during the cut is lost
        sim.deliver(0)
    delivered: list[MsgType] = []
    original = sim.deliver

    def recording(index: int) -> None:
        m = sim.network[index]
        if m.to == lagging and frozenset((m.frm, m.to)) not in sim.cut:
            delivered.append(m.type)
        original(index)
    sim.deliver = recording  # type: ignore[method-assign]
    sim.cut.clear()
    settle(sim)
    assert MsgType.SNAPSHOT in delivered
    assert sim.nodes[lagging].offset == last
    assert [e.data for e in sim.applied[lagging]] == [e.data for e in sim.applied[leader.id]]
    # It keeps replicating normally after the snapshot.
    after = sim.submit(leader.id, b"after")
    settle(sim, 5)
    assert sim.applied[lagging][-1].index == acknowledged(after)


async def test_a_restart_recovers_from_snapshot_plus_log() -> None:
    sim = await SimCluster.start(["a", "b", "c"], seed=10)
    write(sim, 20)
    node_id = sim.ids[0]
    sim.compact(node_id)
    write(sim, 5)
    before = [e.data for e in sim.applied[node_id]]
    sim.crash(node_id)
    await sim.restart(node_id)
    assert [e.data for e in sim.applied[node_id]] == before


def add(sim: SimCluster, members: dict[str, dict[str, str]], node_id: str) -> None:
    change(sim, {**members, node_id: {}})


def change(sim: SimCluster, members: dict[str, dict[str, str]]) -> None:
    leader = elect(sim)
    future = sim.change_members(leader.id, members)
    settle(sim, 10)
    acknowledged(future)


def voters(sim: SimCluster) -> dict[str, dict[str, str]]:
    leader = elect(sim)
    return config_members(leader.config)


async def test_grow_from_three_to_five_and_shrink_back() -> None:
    sim = await SimCluster.start(["a", "b", "c"], seed=11, spares=2)
    write(sim, 10)
    add(sim, voters(sim), "spare0")
    add(sim, voters(sim), "spare1")
    assert sorted(voters(sim)) == ["a", "b", "c", "spare0", "spare1"]
    index = write(sim, 3)
    assert all(sim.applied[i][-1].index >= index for i in sim.ids)  # the new ones too
    # Two of the original servers go; the cluster keeps committing without them.
    for gone in ("a", "b"):
        members = voters(sim)
        del members[gone]
        change(sim, members)
    assert sorted(voters(sim)) == ["c", "spare0", "spare1"]
    sim.crash("a")
    sim.crash("b")
    index = write(sim, 3)
    assert all(sim.applied[i][-1].index >= index for i in ("c", "spare0", "spare1"))


async def test_one_change_at_a_time() -> None:
    sim = await SimCluster.start(["a", "b", "c"], seed=12, spares=2)
    write(sim, 1)
    leader = elect(sim)
    with pytest.raises(ConfigError, match="one server at a time"):
        sim.change_members(leader.id, {**voters(sim), "spare0": {}, "spare1": {}})
    sim.change_members(leader.id, {**voters(sim), "spare0": {}})
    with pytest.raises(ConfigError, match="in progress"):
        sim.change_members(leader.id, {"a": {}, "b": {}, "c": {}})
    with pytest.raises(ConfigError, match="last server"):
        settle(sim, 10)
        sim.change_members(elect(sim).id, {})


async def test_a_leader_that_removes_itself_steps_down_and_the_rest_elect() -> None:
    sim = await SimCluster.start(["a", "b", "c"], seed=13)
    write(sim, 2)
    leader = elect(sim)
    old = leader.id
    members = voters(sim)
    del members[old]
    change(sim, members)
    assert sim.nodes[old].role == Role.FOLLOWER
    new = elect(sim)
    assert new.id != old and sorted(new.peers) == sorted(members)
    for _ in range(100):  # the removed server never campaigns again
        sim.tick(old)
        assert sim.nodes[old].role == Role.FOLLOWER
    index = write(sim, 2)
    assert sim.nodes[new.id].commit >= index


async def test_replace_a_server_whose_disk_was_wiped() -> None:
    """The safe procedure: remove it, wipe it, add it back empty; it is brought up to
    date by snapshot and log."""
    sim = await SimCluster.start(["a", "b", "c"], seed=14)
    write(sim, 30)
    leader = elect(sim)
    victim = next(i for i in sim.ids if i != leader.id)
    members = voters(sim)
    del members[victim]
    change(sim, members)
    sim.crash(victim)
    for node_id in sim.ids:
        if node_id != victim:
            sim.compact(node_id)
    sim.disks[victim] = MemoryStorage()  # wiped: no snapshot, no log, no vote
    await sim.restart(victim)
    add(sim, voters(sim), victim)
    index = write(sim, 2)
    assert sim.applied[victim][-1].index >= index
    assert [e.data for e in sim.applied[victim]] == \
        [e.data for e in sim.applied[elect(sim).id]]


async def test_the_lease_is_renewed_by_a_majority_and_lapses_in_isolation() -> None:
    sim = await SimCluster.start(["a", "b", "c"], seed=15)
    write(sim, 1)
    leader = elect(sim)
    for node_id in sim.ids:
        sim.tick(node_id)
    while sim.network:
        sim.deliver(0)
    stamp = leader.lease_stamp()
    assert stamp == leader.ticks  # the latest heartbeat round was answered
    assert all(n.lease_stamp() is None for n in sim.nodes.values() if n is not leader)
    for other in sim.ids:
        if other != leader.id:
            sim.cut.add(frozenset((leader.id, other)))
    for _ in range(leader.election_ticks - 1):
        sim.tick(leader.id)
        while sim.network:
            sim.deliver(0)
    # Cut off, the leader still leads, but its lease dates from before the cut.
    assert leader.role == Role.LEADER and leader.lease_stamp() == stamp
    assert leader.ticks - stamp == leader.election_ticks - 1


async def test_no_lease_while_leadership_is_being_handed_over() -> None:
    sim = await SimCluster.start(["a", "b", "c"], seed=16)
    write(sim, 1)
    leader = elect(sim)
    target = next(i for i in sim.ids if i != leader.id)
    leader.transfer_leadership(target)
    assert leader.lease_stamp() is None


async def test_a_restarted_server_votes_for_no_one_for_an_election_timeout() -> None:
    """It may have promised a leader its silence before it crashed."""
    sim = await SimCluster.start(["a", "b", "c"], seed=17)
    write(sim, 1)
    leader = elect(sim)
    voter = next(i for i in sim.ids if i != leader.id)
    sim.crash(voter)
    await sim.restart(voter)
    node = sim.nodes[voter]
    ask = Message(MsgType.PRE_VOTE, "someone", voter, node.term + 1, node.last_term,
                  node.last_index)
    node.step(ask)
    assert node.ready().messages[-1].reject
    for _ in range(node.election_ticks):
        node.tick()
    node.step(ask)
    assert not node.ready().messages[-1].reject


async def test_an_old_leader_deposed_by_the_append_that_overwrites_its_write() -> None:
    """The old leader's write is refused as NotLeader, not Unavailable, when one Ready
    both deposes it and commits another leader's entry at the write's index: only
    then does the driver know the write can never commit."""
    sim = await SimCluster.start(["a", "b", "c"], seed=18)
    write(sim, 1)
    settle(sim, 2)  # every server knows the commit index
    old = elect(sim)
    term, others = old.term, [i for i in sim.ids if i != old.id]
    x = sim.submit(old.id, b"X")
    index = old.last_index
    sim.network.clear()  # its appends of X are lost
    for other in others:
        sim.cut.add(frozenset((old.id, other)))
    # Cut off and never ticked, it does not step down (no check-quorum round).
    for _ in range(100):
        for other in others:
            sim.tick(other)
        while sim.network:
            sim.deliver(0)
        if any(sim.nodes[i].role == Role.LEADER for i in others):
            break
    new = next(sim.nodes[i] for i in others if sim.nodes[i].role == Role.LEADER)
    assert new.term > term and new.commit >= index and new.term_at(index) == new.term
    assert old.role == Role.LEADER and old.term_at(index) == term and not x.done()
    sim.cut.clear()
    sim.tick(new.id)  # a heartbeat round, with the commit index past X's
    to_old = next(i for i, m in enumerate(sim.network) if m.to == old.id)
    assert sim.network[to_old].commit >= index
    sim.deliver(to_old)
    assert old.role == Role.FOLLOWER and old.commit >= index
    assert x.done() and isinstance(x.exception(), NotLeader), x
    settle(sim, 5)
    assert sim.committed[index].term == new.term
    assert b"X" not in {e.data for e in sim.committed.values()}
    sim.check_proposals()


async def test_a_follower_that_crashes_right_after_acknowledging_keeps_the_entry() -> None:
    """The crash comes in the middle of its driver's process(), after the send and
    before anything is applied or advanced: what it acknowledged is stored."""
    sim = await SimCluster.start(["a", "b", "c"], seed=19)
    write(sim, 1)
    leader = elect(sim)
    follower = next(i for i in sim.ids if i != leader.id)
    sim.doomed = (follower, 1)  # its next send is its last
    w = sim.submit(leader.id, b"w")
    index = leader.last_index
    while follower not in sim.down:
        sim.deliver(0)
    ack = sim.network[-1]
    assert (ack.type, ack.frm, ack.index, ack.reject) == (MsgType.APPEND_RESP, follower,
                                                         index, False)
    assert sim.disks[follower].log[-1].data == b"w"
    await sim.restart(follower)
    settle(sim, 5)
    assert acknowledged(w) == index and sim.applied[follower][-1].index == index

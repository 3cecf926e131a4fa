"""Raft under a hostile network: thousands of seeded schedules of the real driver,
invariants after every step, and progress once the network heals. A failing seed is
printed for replay: ``await SimCluster.start(ids, seed, spares)`` reproduces it
exactly."""

from __future__ import annotations

import asyncio

import pytest

from meshlet.errors import NotLeader
from meshlet.raft.core import Role
from tests.sim.cluster import SimCluster, elect

SEEDS = range(400)


@pytest.mark.parametrize(("size", "spares"), [(3, 0), (5, 0), (3, 2)],
                         ids=["3-static", "5-static", "3-with-membership-changes"])
async def test_safety_and_liveness_over_many_schedules(size: int, spares: int) -> None:
    """Every schedule also takes snapshots and compacts logs at random; with spares,
    the leader adds and removes servers one at a time as well. What the drivers
    answered their proposers is checked against the history too."""
    ids = [f"n{i}" for i in range(size)]
    failures = []
    committed_total = 0
    for seed in SEEDS:
        sim = await SimCluster.start(ids, seed, spares)
        try:
            await run_schedule(sim, spares > 0)
        except AssertionError as exc:
            failures.append(f"seed {seed}: {exc}")
            continue
        finally:
            await sim.close()
        committed_total += len(sim.committed)
    assert failures == [], "\n".join(failures[:5])
    assert committed_total > len(SEEDS) * 3  # the schedules did commit real work


async def run_schedule(sim: SimCluster, reconfigure: bool) -> None:
    for _ in range(400):
        await sim.random_step(reconfigure)
    assert await sim.heal_and_settle(), "no progress after the network healed"


async def test_a_seed_replays_exactly() -> None:
    runs = []
    for _ in range(2):
        sim = await SimCluster.start(["n0", "n1", "n2"], 7, spares=2)
        await run_schedule(sim, reconfigure=True)
        await sim.close()
        runs.append((sorted(sim.committed.items()), sim.leaders, sim.proposed,
                     [(n.term, n.last_index, n.offset) for n in sim.nodes.values()]))
    assert runs[0] == runs[1]


async def test_pre_vote_stops_a_rejoining_node_from_deposing_the_leader() -> None:
    sim = await SimCluster.start(["a", "b", "c"], seed=1)
    leader = elect(sim)
    term = leader.term
    lonely = next(i for i in sim.ids if i != leader.id)
    for other in sim.ids:
        if other != lonely:
            sim.cut.add(frozenset((lonely, other)))
    for _ in range(200):  # the isolated node times out again and again
        sim.tick(lonely)
        for node_id in sim.ids:
            if node_id != lonely:
                sim.tick(node_id)
        while sim.network:
            sim.deliver(0)
    assert sim.nodes[lonely].term == term  # pre-vote: its term never grew
    sim.cut.clear()
    for _ in range(50):
        for node_id in sim.ids:
            sim.tick(node_id)
        while sim.network:
            sim.deliver(0)
    assert sim.nodes[leader.id].role == Role.LEADER and sim.nodes[leader.id].term == term


async def test_check_quorum_makes_an_isolated_leader_step_down() -> None:
    sim = await SimCluster.start(["a", "b", "c"], seed=2)
    leader = elect(sim)
    for other in sim.ids:
        if other != leader.id:
            sim.cut.add(frozenset((leader.id, other)))
    for _ in range(3 * leader.election_ticks):
        sim.tick(leader.id)
        while sim.network:
            sim.deliver(0)
    assert sim.nodes[leader.id].role != Role.LEADER


async def test_leadership_transfer() -> None:
    sim = await SimCluster.start(["a", "b", "c"], seed=3)
    leader = elect(sim)
    sim.submit(leader.id, b"x")
    while sim.network:
        sim.deliver(0)
    target = next(i for i in sim.ids if i != leader.id)
    old_term = leader.term
    leader.transfer_leadership(target)
    sim.process(leader.id)
    for _ in range(20):
        while sim.network:
            sim.deliver(0)
        if sim.nodes[target].role == Role.LEADER:
            break
        for node_id in sim.ids:
            sim.tick(node_id)
    assert sim.nodes[target].role == Role.LEADER
    assert sim.nodes[target].term == old_term + 1  # it won at once, with no timeout
    assert sim.nodes[leader.id].role == Role.FOLLOWER


async def test_single_node_commits_alone() -> None:
    sim = await SimCluster.start(["solo"], seed=4)
    elect(sim)
    write = sim.submit("solo", b"only")
    index = write.result()  # committed and applied within the one Ready
    assert sim.applied["solo"][-1].index == index and sim.applied["solo"][-1].data == b"only"


async def test_read_index_needs_a_quorum_of_acknowledgements() -> None:
    sim = await SimCluster.start(["a", "b", "c"], seed=5)
    leader = elect(sim)
    sim.submit(leader.id, b"w")
    while sim.network:
        sim.deliver(0)
    read = asyncio.ensure_future(sim.drivers[leader.id].read_index())
    await asyncio.sleep(0)  # one turn of the loop: the read starts, its round goes out
    assert sim.network and not leader.ready_reads
    while sim.network:
        sim.deliver(0)
    assert await read == leader.commit  # confirmed by the round, at the commit index


async def test_read_index_on_an_isolated_leader_is_never_confirmed() -> None:
    sim = await SimCluster.start(["a", "b", "c"], seed=6)
    leader = elect(sim)
    for other in sim.ids:
        if other != leader.id:
            sim.cut.add(frozenset((leader.id, other)))
    read = asyncio.ensure_future(sim.drivers[leader.id].read_index())
    await asyncio.sleep(0)  # one turn of the loop: the read starts
    for _ in range(3 * leader.election_ticks):
        sim.tick(leader.id)
        assert not leader.ready().reads
        while sim.network:
            sim.deliver(0)
    assert leader.role != Role.LEADER and not leader.pending_reads
    with pytest.raises(NotLeader):
        await read  # failed when leadership was lost, never confirmed


async def test_read_index_refused_on_followers() -> None:
    sim = await SimCluster.start(["a", "b", "c"], seed=7)
    leader = elect(sim)
    follower = next(i for i in sim.ids if i != leader.id)
    with pytest.raises(NotLeader):
        await sim.drivers[follower].read_index()

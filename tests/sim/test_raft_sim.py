"""Raft under a hostile network: thousands of seeded schedules, invariants after every
step, and progress once the network heals. A failing seed is printed for replay:
``SimCluster(ids, seed)`` reproduces it exactly."""

from __future__ import annotations

import pytest

from meshlet.raft.core import Role
from tests.sim.cluster import SimCluster, elect

SEEDS = range(400)


@pytest.mark.parametrize(("size", "spares"), [(3, 0), (5, 0), (3, 2)],
                         ids=["3-static", "5-static", "3-with-membership-changes"])
def test_safety_and_liveness_over_many_schedules(size: int, spares: int) -> None:
    """Every schedule also takes snapshots and compacts logs at random; with spares,
    the leader adds and removes servers one at a time as well."""
    ids = [f"n{i}" for i in range(size)]
    failures = []
    committed_total = 0
    for seed in SEEDS:
        sim = SimCluster(ids, seed, spares)
        try:
            for _ in range(400):
                sim.random_step(reconfigure=spares > 0)
            assert sim.heal_and_settle(), "no progress after the network healed"
        except AssertionError as exc:
            failures.append(f"seed {seed}: {exc}")
            continue
        committed_total += len(sim.committed)
    assert failures == [], "\n".join(failures[:5])
    assert committed_total > len(SEEDS) * 3  # the schedules did commit real work


def test_pre_vote_stops_a_rejoining_node_from_deposing_the_leader() -> None:
    sim = SimCluster(["a", "b", "c"], seed=1)
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


def test_check_quorum_makes_an_isolated_leader_step_down() -> None:
    sim = SimCluster(["a", "b", "c"], seed=2)
    leader = elect(sim)
    for other in sim.ids:
        if other != leader.id:
            sim.cut.add(frozenset((leader.id, other)))
    for _ in range(3 * leader.election_ticks):
        sim.tick(leader.id)
        while sim.network:
            sim.deliver(0)
    assert sim.nodes[leader.id].role != Role.LEADER


def test_leadership_transfer() -> None:
    sim = SimCluster(["a", "b", "c"], seed=3)
    leader = elect(sim)
    leader.propose(b"x")
    sim.process(leader.id)
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


def test_single_node_commits_alone() -> None:
    sim = SimCluster(["solo"], seed=4)
    leader = elect(sim)
    index = leader.propose(b"only")
    sim.process("solo")
    assert sim.applied["solo"][-1].index == index and sim.applied["solo"][-1].data == b"only"


def test_read_index_needs_a_quorum_of_acknowledgements() -> None:
    sim = SimCluster(["a", "b", "c"], seed=5)
    leader = elect(sim)
    leader.propose(b"w")
    sim.process(leader.id)
    while sim.network:
        sim.deliver(0)
    leader.read_index(7)
    sim.process(leader.id)
    assert not leader.ready_reads  # not before the heartbeat round is acknowledged
    confirmed: list[tuple[int, int]] = []
    original_process = sim.process_once

    def recording(node_id: str) -> bool:
        if node_id == leader.id:
            confirmed.extend(leader.ready().reads)
        return original_process(node_id)
    sim.process_once = recording  # type: ignore[method-assign]
    while sim.network:
        sim.deliver(0)
    assert confirmed == [(7, leader.commit)]


def test_read_index_on_an_isolated_leader_is_never_confirmed() -> None:
    sim = SimCluster(["a", "b", "c"], seed=6)
    leader = elect(sim)
    for other in sim.ids:
        if other != leader.id:
            sim.cut.add(frozenset((leader.id, other)))
    leader.read_index(1)
    for _ in range(3 * leader.election_ticks):
        sim.tick(leader.id)
        assert not leader.ready().reads
        while sim.network:
            sim.deliver(0)
    assert leader.role != Role.LEADER and not leader.pending_reads


def test_read_index_refused_on_followers() -> None:
    from meshlet.raft.core import NotLeaderError
    sim = SimCluster(["a", "b", "c"], seed=7)
    leader = elect(sim)
    follower = next(n for i, n in sim.nodes.items() if i != leader.id)
    with pytest.raises(NotLeaderError):
        follower.read_index(1)

"""Load-balancing policies: exactness, proportions, load and latency awareness,
consistency of the hash policies (with stated tolerances), locality."""

from __future__ import annotations

import heapq
import itertools
import math
import random
from collections import Counter
from collections.abc import Callable

import pytest
from hypothesis import given
from hypothesis import strategies as st

from meshlet.proxy.config import Endpoint
from meshlet.proxy.lb import (
    Balancer,
    EndpointState,
    LeastRequest,
    Locality,
    Maglev,
    PeakEwma,
    PickContext,
    Random,
    RingHash,
    RoundRobin,
    WeightedRoundRobin,
    make_balancer,
)
from meshlet.proxy.lb.hashing import jump_hash
from meshlet.proxy.lb.maglev import build_table


def states(n: int, weights: list[int] | None = None, zones: list[str] | None = None
           ) -> list[EndpointState]:
    return [EndpointState(Endpoint(f"e{i}", "127.0.0.1", 1000 + i,
                                   weight=weights[i] if weights else 1,
                                   zone=zones[i] if zones else ""))
            for i in range(n)]


def ctx(seed: int = 1, key: bytes | None = None, now: float = 0.0) -> PickContext:
    return PickContext(random.Random(seed), now, key)


# -- round robin and smooth weighted round robin --------------------------------------

@given(st.integers(1, 20), st.integers(1, 10))
def test_round_robin_exactly_even_over_whole_cycles(n: int, cycles: int) -> None:
    rr = RoundRobin()
    rr.reset(states(n))
    c = ctx()
    counts = Counter(rr.pick(c) for _ in range(n * cycles))
    assert set(counts.values()) == {cycles} and len(counts) == n


def test_round_robin_empty_and_exclude() -> None:
    rr = RoundRobin()
    assert rr.pick(ctx()) is None
    eps = states(3)
    rr.reset(eps)
    assert rr.pick(ctx(), exclude=eps[:2]) is eps[2]
    assert rr.pick(ctx(), exclude=eps) is None


@given(st.lists(st.integers(1, 9), min_size=1, max_size=8))
def test_smooth_wrr_exact_proportions_every_cycle(weights: list[int]) -> None:
    wrr = WeightedRoundRobin()
    eps = states(len(weights), weights)
    wrr.reset(eps)
    c = ctx()
    total = sum(weights)
    for _ in range(3):  # three consecutive cycles, each exact on its own
        counts = Counter(wrr.pick(c) for _ in range(total))
        assert {e.endpoint.id: counts[e] for e in eps} == {
            e.endpoint.id: w for e, w in zip(eps, weights, strict=True)}


@given(st.lists(st.integers(1, 9), min_size=2, max_size=8))
def test_smooth_wrr_never_twice_in_a_row_when_weights_allow(weights: list[int]) -> None:
    heaviest = max(weights)
    if heaviest > sum(weights) - heaviest:  # then some repeat is unavoidable
        return
    wrr = WeightedRoundRobin()
    wrr.reset(states(len(weights), weights))
    c = ctx()
    # nginx's algorithm promises this within each cycle; across the boundary between
    # two cycles the heaviest endpoint may close one and open the next.
    cycle = sum(weights) // math.gcd(*weights)
    for _ in range(3):
        picks = [wrr.pick(c) for _ in range(cycle)]
        assert all(a is not b for a, b in itertools.pairwise(picks))


def test_weights_respected_by_random_within_5_sigma() -> None:
    eps = states(3, [1, 2, 7])
    policy = Random()
    policy.reset(eps)
    c = ctx(7)
    n = 20000
    counts = Counter(policy.pick(c) for _ in range(n))
    for e in eps:
        p = e.weight / 10
        sigma = (n * p * (1 - p)) ** 0.5
        assert abs(counts[e] - n * p) < 5 * sigma


# -- load and latency aware -------------------------------------------------------------

def simulate(policy: Balancer, service_time: Callable[[int], float], n_endpoints: int = 3,
             requests: int = 3000, concurrency: int = 12, seed: int = 3) -> Counter[int]:
    """A closed-loop simulation in virtual time: ``concurrency`` clients each send a
    request, wait for it to finish, and send the next."""
    eps = states(n_endpoints)
    policy.reset(eps)
    rng = random.Random(seed)
    counts: Counter[int] = Counter()
    in_flight: list[tuple[float, int, int]] = []
    now = 0.0
    sent = 0
    for client in range(concurrency):
        heapq.heappush(in_flight, (now, client, -1))
    while sent < requests:
        now, client, index = heapq.heappop(in_flight)
        if index >= 0:
            eps[index].finish(service_time(index), now)
        chosen = policy.pick(PickContext(rng, now))
        assert chosen is not None
        i = eps.index(chosen)
        chosen.start()
        counts[i] += 1
        sent += 1
        heapq.heappush(in_flight, (now + service_time(i), client, i))
    return counts


def test_least_request_moves_load_away_from_a_busy_endpoint() -> None:
    counts = simulate(LeastRequest(), lambda i: 0.050 if i == 0 else 0.005)
    assert counts[0] < 0.15 * sum(counts.values())  # fair share would be a third


def test_least_request_prefers_fewer_outstanding() -> None:
    eps = states(2)
    policy = LeastRequest()
    policy.reset(eps)
    for _ in range(5):
        eps[0].start()
    assert all(policy.pick(ctx(s)) is eps[1] for s in range(50))


def test_peak_ewma_sends_a_200ms_endpoint_under_10_percent() -> None:
    counts = simulate(PeakEwma(), lambda i: 0.200 if i == 0 else 0.002)
    assert counts[0] < 0.10 * sum(counts.values())


def test_peak_ewma_probes_a_recovered_endpoint_again() -> None:
    eps = states(2)
    policy = PeakEwma(decay=10.0)
    policy.reset(eps)
    eps[0].start()
    eps[0].finish(0.500, now=0.0)  # one slow response: the peak counts in full
    eps[1].start()
    eps[1].finish(0.010, now=0.0)
    assert policy.pick(ctx(now=1.0)) is eps[1]
    # Sixty seconds later the estimate has decayed below the other's.
    eps[1].start()
    eps[1].finish(0.010, now=60.0)
    assert eps[0].expected_rtt(60.0) < eps[1].expected_rtt(60.0)
    assert policy.pick(ctx(now=60.0)) is eps[0]


# -- consistent hashing -------------------------------------------------------------------

KEYS = [f"user-{i}".encode() for i in range(10_000)]


def assignment(policy: Balancer, eps: list[EndpointState]) -> dict[bytes, str]:
    policy.reset(eps)
    out = {}
    for key in KEYS:
        chosen = policy.pick(ctx(key=key))
        assert chosen is not None
        out[key] = chosen.endpoint.id
    return out


@pytest.mark.parametrize("make, spread_bound", [
    (RingHash, 1.40),   # 128 points per endpoint: max share within 40% of mean
    (Maglev, 1.15),     # table of 65537 slots: within 15% (sampling noise)
])
def test_hash_policies_consistency_and_spread(make: Callable[[], Balancer],
                                              spread_bound: float) -> None:
    eps = states(10)
    before = assignment(make(), eps)
    assert assignment(make(), eps) == before  # same key, same endpoint, even across builds
    counts = Counter(before.values())
    assert max(counts.values()) <= spread_bound * len(KEYS) / 10
    assert min(counts.values()) >= (2 - spread_bound) * len(KEYS) / 10

    removed = eps[3]
    after = assignment(make(), [e for e in eps if e is not removed])
    moved = [k for k in KEYS if before[k] != after[k]]
    # Tolerance: at most 1.3/N of keys move when one of N=10 endpoints goes.
    assert len(moved) <= 1.3 * len(KEYS) / 10
    assert sum(1 for k in moved if before[k] == removed.endpoint.id) >= 0.9 * len(moved)

    grown = assignment(make(), [*eps, *states(11)[10:]])
    moved = [k for k in KEYS if before[k] != grown[k]]
    assert len(moved) <= 1.3 * len(KEYS) / 11
    assert all(grown[k] == "e10" for k in moved) or isinstance(make(), Maglev)


def test_ring_hash_removal_moves_only_the_removed_endpoints_keys() -> None:
    eps = states(10)
    before = assignment(RingHash(), eps)
    after = assignment(RingHash(), eps[:4] + eps[5:])
    assert {before[k] for k in KEYS if before[k] != after[k]} == {"e4"}


def test_hash_policies_without_key_fall_back_to_random_and_honour_exclude() -> None:
    for policy in (RingHash(), Maglev(7919)):
        eps = states(4)
        policy.reset(eps)
        seen = {policy.pick(ctx(seed)) for seed in range(40)}
        assert len(seen) == 4
        first = policy.pick(ctx(key=b"k"))
        second = policy.pick(ctx(key=b"k"), exclude=[first])  # type: ignore[list-item]
        assert second is not None and second is not first


def test_weights_shape_the_hash_space() -> None:
    eps = states(2, [1, 3])
    for policy in (RingHash(), Maglev()):
        counts = Counter(assignment(policy, eps).values())
        assert 0.65 < counts["e1"] / len(KEYS) < 0.85


def test_maglev_table_is_full_and_deterministic() -> None:
    table = build_table(["a", "b", "c"], [1, 1, 1], 251)
    assert -1 not in table and build_table(["a", "b", "c"], [1, 1, 1], 251) == table
    assert max(Counter(table).values()) - min(Counter(table).values()) <= 1


def test_jump_hash_moves_one_nth_when_growing() -> None:
    keys = range(20_000)
    moved = sum(1 for k in keys if jump_hash(k * 2654435761, 9) != jump_hash(k * 2654435761, 10))
    assert abs(moved / 20_000 - 0.1) < 0.02


# -- locality -----------------------------------------------------------------------------

def test_locality_keeps_traffic_local_while_healthy() -> None:
    eps = states(6, zones=["a", "a", "a", "b", "b", "b"])
    policy = Locality("a")
    policy.observe_population(eps)
    policy.reset(eps)
    picks = Counter(policy.pick(ctx(s)).endpoint.zone for s in range(300))  # type: ignore[union-attr]
    assert picks == {"a": 300}


def test_locality_spills_when_local_share_is_unhealthy() -> None:
    eps = states(6, zones=["a", "a", "a", "b", "b", "b"])
    policy = Locality("a", min_healthy=0.7)
    policy.observe_population(eps)
    policy.reset([eps[0], *eps[3:]])  # two of three local endpoints are down
    zones = Counter(policy.pick(ctx(s)).endpoint.zone for s in range(400))  # type: ignore[union-attr]
    assert zones["b"] > 200 and zones["a"] > 0


def test_locality_spills_when_overloaded() -> None:
    eps = states(4, zones=["a", "b", "b", "b"])
    policy = Locality("a", max_outstanding=5)
    policy.observe_population(eps)
    policy.reset(eps)
    assert policy.pick(ctx()).endpoint.zone == "a"  # type: ignore[union-attr]
    for _ in range(5):
        eps[0].start()
    zones = Counter(policy.pick(ctx(s)).endpoint.zone for s in range(100))  # type: ignore[union-attr]
    assert zones["b"] == 100


def test_node_tier_comes_first() -> None:
    eps = [EndpointState(Endpoint("x", "127.0.0.1", 1, zone="a", node="n2")),
           EndpointState(Endpoint("y", "127.0.0.1", 2, zone="a", node="n1"))]
    policy = Locality("a", "n1")
    policy.reset(eps)
    assert {policy.pick(ctx(s)).endpoint.id for s in range(50)} == {"y"}  # type: ignore[union-attr]


def test_every_policy_name_builds() -> None:
    from meshlet.proxy.lb import POLICY_NAMES
    from meshlet.state.config_entry import LB_POLICIES
    assert set(POLICY_NAMES) == set(LB_POLICIES)
    for name in POLICY_NAMES:
        policy = make_balancer(name, {}, "a", "n")
        policy.reset(states(3))
        assert policy.pick(ctx(key=b"k")) is not None

"""Round robin: exact evenness, exclusion, stable across identical resets."""

from __future__ import annotations

from collections import Counter

from hypothesis import given
from hypothesis import strategies as st

from meshlet.proxy.config import Endpoint
from meshlet.proxy.lb import RoundRobin


def endpoints(n: int) -> list[Endpoint]:
    return [Endpoint(f"e{i}", "127.0.0.1", 1000 + i) for i in range(n)]


@given(st.integers(1, 20), st.integers(1, 10))
def test_exactly_even_over_whole_cycles(n: int, cycles: int) -> None:
    rr = RoundRobin()
    rr.reset(endpoints(n))
    counts = Counter(rr.pick() for _ in range(n * cycles))
    assert set(counts.values()) == {cycles} and len(counts) == n


def test_empty_and_exclude() -> None:
    rr = RoundRobin()
    assert rr.pick() is None
    eps = endpoints(3)
    rr.reset(eps)
    assert rr.pick(exclude=eps[:2]) == eps[2]
    assert rr.pick(exclude=eps) is None


def test_same_set_again_keeps_position() -> None:
    rr = RoundRobin()
    eps = endpoints(3)
    rr.reset(eps)
    first = rr.pick()
    rr.reset(list(eps))
    assert rr.pick() != first

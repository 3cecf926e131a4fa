"""Retry decisions, retry budget, outlier detection and token bucket, on a virtual
clock."""

from __future__ import annotations

import random
from typing import Any

import pytest

from meshlet.proxy.resilience.outlier import OutlierDetector
from meshlet.proxy.resilience.retry import (
    BREAKER_OPEN,
    BUDGET_EXHAUSTED,
    NOT_RETRYABLE,
    REFUSAL,
    RETRY,
    backoff_delay,
    decide_retry,
)
from meshlet.proxy.resilience.retry_budget import RetryBudget
from meshlet.proxy.resilience.token_bucket import TokenBucket


def test_retry_budget_allows_percent_plus_floor() -> None:
    budget = RetryBudget(percent=20, min_per_second=1, window=10)
    for _ in range(1000):
        budget.record_request(now=5.0)
    allowed = 0
    while budget.try_retry(now=5.0):
        allowed += 1
    assert allowed == 10 + 200  # floor: 1/s over 10 s; plus 20% of 1000


def test_retry_budget_forgets_old_requests() -> None:
    budget = RetryBudget(percent=50, min_per_second=0, window=10)
    for _ in range(100):
        budget.record_request(now=0.5)
    assert budget.try_retry(now=1.0)
    assert not budget.try_retry(now=30.0)  # the requests that paid for it are gone


def test_retry_budget_floor_alone_caps_retries_when_nothing_succeeds() -> None:
    budget = RetryBudget(percent=20, min_per_second=2, window=10)
    granted = sum(budget.try_retry(now=float(t) / 10) for t in range(100))
    assert granted == 20


def test_outlier_ejects_after_consecutive_failures_and_returns() -> None:
    d = OutlierDetector(consecutive=3, base_time=10, max_time=100, max_percent=50)
    d.set_population(["a", "b", "c", "d"])
    assert not d.record("a", True, 0) and not d.record("a", True, 1)
    assert not d.record("a", False, 1)  # a success resets the count
    assert [d.record("a", True, t) for t in (2, 3, 4)] == [False, False, True]
    assert d.ejected() == {"a"}
    assert d.expire(13.9) == [] and d.expire(14.0) == ["a"]
    assert d.ejected() == set()
    # Ejected again: twice as long.
    for t in (20, 21, 22):
        d.record("a", True, t)
    assert d.expire(41.9) == [] and d.expire(42.0) == ["a"]


def test_outlier_never_ejects_more_than_max_percent() -> None:
    d = OutlierDetector(consecutive=1, base_time=10, max_percent=50)
    d.set_population(["a", "b", "c", "d"])
    assert d.record("a", True, 0) and d.record("b", True, 0)
    assert not d.record("c", True, 0)  # would make 75%
    assert d.ejected() == {"a", "b"}


def test_outlier_ejection_time_is_capped() -> None:
    d = OutlierDetector(consecutive=1, base_time=10, max_time=25, max_percent=100)
    d.set_population(["a"])
    t = 0.0
    for _ in range(4):
        assert d.record("a", True, t)
        t = d.next_expiry  # type: ignore[assignment]
        d.expire(t)
    assert t == 10 + 20 + 25 + 25


def test_token_bucket() -> None:
    bucket = TokenBucket(rate=10, burst=5, now=0)
    assert [bucket.take(0) for _ in range(6)] == [True] * 5 + [False]
    assert bucket.take(0.1) and not bucket.take(0.1)
    assert sum(bucket.take(10.0) for _ in range(10)) == 5  # refills only up to the burst


def retry(budget: RetryBudget | None = None, **changes: Any) -> int:
    """decide_retry for a replayable GET after its first attempt, with ``changes``."""
    ask: dict[str, Any] = dict(attempts=1, retries=2, replayable=True, endpoint_left=True,
                               method=b"GET", not_processed=False, non_idempotent=False,
                               now=5.0, breaker_room=True)
    ask.update(changes)
    return decide_retry(budget=budget or RetryBudget(min_per_second=1), **ask)


def test_a_replayable_idempotent_request_is_retried() -> None:
    assert retry() == RETRY
    assert retry(attempts=2) == RETRY  # retries=2: the third attempt is allowed


@pytest.mark.parametrize("changes", [
    {"attempts": 3},  # no attempt left
    {"replayable": False},  # its body was not kept, or a response began
    {"endpoint_left": False},
    {"method": b"POST"},
])
def test_what_makes_a_request_not_retryable(changes: dict[str, Any]) -> None:
    budget = RetryBudget(min_per_second=1)
    assert retry(budget, **changes) == NOT_RETRYABLE
    assert budget.try_retry(5.0)  # asking spent nothing


def test_a_post_is_retried_when_safe() -> None:
    assert retry(method=b"POST", not_processed=True) == RETRY  # the peer never ran it
    assert retry(method=b"POST", non_idempotent=True) == RETRY  # the cluster allows it


def test_the_budget_then_the_breaker_refuse() -> None:
    budget = RetryBudget(percent=0, min_per_second=0.1, window=10)  # one retry in all
    assert retry(budget, breaker_room=False) == BREAKER_OPEN
    assert retry(budget) == BUDGET_EXHAUSTED  # the refused retry had spent the budget
    assert REFUSAL[BUDGET_EXHAUSTED] == "retry_budget_exhausted"
    assert REFUSAL[BREAKER_OPEN] == "breaker_open"


def test_backoff_is_full_jitter_below_a_doubling_ceiling() -> None:
    rng = random.Random(7)
    for attempts, ceiling in ((1, 0.025), (2, 0.05), (3, 0.1), (10, 0.25)):
        delays = [backoff_delay(attempts, 0.025, 0.25, rng) for _ in range(200)]
        assert all(0 <= d <= ceiling for d in delays)
        assert max(delays) > ceiling / 2

"""Whether a failed attempt is tried again, and after how long: pure, clocked by the
caller.

A retry needs all of: an attempt left (``retries`` after the first), the request still
replayable (its bytes kept, no response begun), an endpoint not tried yet, and a request
safe to repeat (an idempotent method, a peer that says it did not process the request,
or a cluster that allows non-idempotent retries). It then spends one retry from the
budget and needs room under the retry breaker, in that order: a retry the breaker stops
has spent its budget all the same.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:  # injected, never imported here: a pure core
    import random

    from meshlet.proxy.resilience.retry_budget import RetryBudget

IDEMPOTENT = frozenset({b"GET", b"HEAD", b"OPTIONS", b"PUT", b"DELETE", b"TRACE"})

RETRY, NOT_RETRYABLE, BUDGET_EXHAUSTED, BREAKER_OPEN = range(4)
# The reason a refused retry gives, in x-meshlet-error and the metrics.
REFUSAL = {BUDGET_EXHAUSTED: "retry_budget_exhausted", BREAKER_OPEN: "breaker_open"}


def decide_retry(*, attempts: int, retries: int, replayable: bool, endpoint_left: bool,
                 method: bytes, not_processed: bool, non_idempotent: bool,
                 budget: RetryBudget, now: float, breaker_room: bool) -> int:
    """RETRY, NOT_RETRYABLE, or what refused a retry otherwise allowed (BUDGET_EXHAUSTED,
    BREAKER_OPEN). ``attempts`` counts those made so far; a retry spends from ``budget``."""
    if attempts > retries or not replayable or not endpoint_left:
        return NOT_RETRYABLE
    if not (not_processed or non_idempotent or method in IDEMPOTENT):
        return NOT_RETRYABLE
    if not budget.try_retry(now):
        return BUDGET_EXHAUSTED
    if not breaker_room:
        return BREAKER_OPEN
    return RETRY


def backoff_delay(attempts: int, base: float, cap: float, rng: random.Random) -> float:
    """Seconds before the next attempt: full jitter below ``base`` doubled per attempt
    after the first, at most ``cap`` (spreads retries out, as AWS's backoff advice)."""
    return rng.uniform(0, min(cap, base * 2 ** (attempts - 1)))

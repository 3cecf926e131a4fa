"""A linearizability checker for the KV store (Wing & Gong's search with memoisation,
as Porcupine does it), applied per key since a history is linearizable exactly when
each key's sub-history is (P-compositionality).

An operation has a call time, a return time (None if its outcome is unknown: a
timeout or an error after which the write may or may not have happened) and an
output. The model per key is (value, modify_index): ``put`` sets both, taking the
index from its output; ``get`` must observe the current pair; ``cas`` succeeds only if
the index matches, and a failed CAS changes nothing.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from typing import Any

State = tuple[str | None, int]
INFINITY = float("inf")


@dataclass(frozen=True)
class Op:
    client: int
    kind: str                 # put | get | cas
    key: str
    value: str | None         # put/cas: the value written
    expect: int | None        # cas: the modify index expected
    call: float
    ret: float | None         # None: outcome unknown
    ok: bool                  # put/cas: acknowledged; get: found
    out_value: str | None     # get: the value read
    out_index: int | None     # put/cas: new modify index; get: the index read


SEARCH_BUDGET = 500_000


class Inconclusive(Exception):
    """The search ran out of budget: neither proof nor counterexample."""


UNKNOWN = -1  # the modify index a write of unknown outcome left (learned by a later read)


def step(state: State, op: Op) -> State | None:
    """The state after ``op``, or None if ``op`` cannot happen in ``state``."""
    value, index = state
    known = index != UNKNOWN
    if op.kind == "get":
        if op.ret is None:
            return state
        if not op.ok:
            return state if value is None else None
        if op.out_value != value or (known and op.out_index != index):
            return None
        return (value, op.out_index or 0)
    if op.ret is None:  # unknown outcome: if it happened, its index is not known yet
        if op.kind == "cas" and known and op.expect != index:
            return None  # it cannot have happened here
        return (op.value, UNKNOWN)
    new_index = op.out_index or 0
    if op.kind == "put":
        if not op.ok:
            return None
        return (op.value, new_index) if not known or new_index > index else None
    # cas
    if op.ok:
        if known and (op.expect != index or new_index <= index):
            return None
        return (op.value, new_index)
    return state if not known or op.expect != index else None


def check_key(ops: list[Op]) -> bool:
    """Whether one key's history is linearizable."""
    # A write of unknown outcome whose value nobody ever read can be placed after
    # everything else, where it changes nothing observed, and so dropped: unless a
    # later check-and-set failed, since that failure may be its only trace.
    read = {op.out_value for op in ops if op.kind == "get" and op.ok}
    failed_cas = [op.call for op in ops if op.kind == "cas" and op.ret is not None
                  and not op.ok]

    def needed(op: Op) -> bool:
        return (op.ret is not None or op.kind == "get" or op.value in read
                or any(call > op.call for call in failed_cas))
    ops = [op for op in ops if needed(op)]
    n = len(ops)
    unknown_mask = sum(1 << i for i, op in enumerate(ops) if op.ret is None)
    ret = [op.ret if op.ret is not None else INFINITY for op in ops]
    seen: set[tuple[int, State]] = set()
    budget = [SEARCH_BUDGET]

    def search(done: int, state: State) -> bool:
        budget[0] -= 1
        if budget[0] < 0:
            raise Inconclusive(f"gave up after {SEARCH_BUDGET} search steps on {n} operations")
        if done | unknown_mask == (1 << n) - 1:
            return True  # only unknown writes are left: place them last
        if (done, state) in seen:
            return False
        seen.add((done, state))
        # The earliest return among pending ops bounds which ops may go next.
        horizon = min(ret[i] for i in range(n) if not done & (1 << i))
        for i in range(n):
            if done & (1 << i) or ops[i].call > horizon:
                continue
            after = step(state, ops[i])
            if after is not None and search(done | (1 << i), after):
                return True
        return False

    import sys
    sys.setrecursionlimit(max(10_000, 4 * n))
    return search(0, (None, 0))


def check(history: list[Op]) -> dict[str, Any]:
    by_key: dict[str, list[Op]] = defaultdict(list)
    for op in history:
        by_key[op.key].append(op)
    bad = [k for k, ops in by_key.items() if not check_key(sorted(ops, key=lambda o: o.call))]
    return {"ok": not bad, "keys": len(by_key), "ops": len(history), "bad_keys": bad}

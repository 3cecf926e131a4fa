"""The checker itself: it must accept linearizable histories and reject others."""

from __future__ import annotations

from tests.linearizability import Op, check


def put(c: int, v: str, call: float, ret: float | None, index: int | None) -> Op:
    return Op(c, "put", "k", v, None, call, ret, ret is not None, None, index)


def get(c: int, call: float, ret: float, value: str | None, index: int | None) -> Op:
    return Op(c, "get", "k", None, None, call, ret, value is not None, value, index)


def test_sequential_history_is_linearizable() -> None:
    assert check([put(0, "a", 0, 1, 5), get(1, 2, 3, "a", 5)])["ok"]


def test_stale_read_after_a_completed_write_is_not() -> None:
    assert not check([put(0, "a", 0, 1, 5), put(0, "b", 2, 3, 6), get(1, 4, 5, "a", 5)])["ok"]


def test_concurrent_operations_may_order_either_way() -> None:
    history = [put(0, "a", 0, 10, 5), get(1, 1, 2, None, None), get(2, 3, 4, "a", 5)]
    assert check(history)["ok"]


def test_lost_acknowledged_write_is_caught() -> None:
    history = [put(0, "a", 0, 1, 5), get(1, 2, 3, None, None)]
    assert not check(history)["ok"]


def test_unknown_write_may_or_may_not_apply() -> None:
    assert check([put(0, "a", 0, None, None), get(1, 2, 3, None, None)])["ok"]
    assert check([put(0, "a", 0, None, None), get(1, 2, 3, "a", 7)])["ok"]


def test_cas_semantics() -> None:
    ok = [put(0, "a", 0, 1, 5),
          Op(1, "cas", "k", "b", 5, 2, 3, True, None, 6), get(2, 4, 5, "b", 6)]
    assert check(ok)["ok"]
    wrong = [put(0, "a", 0, 1, 5),
             Op(1, "cas", "k", "b", 4, 2, 3, True, None, 6)]  # expected index was wrong
    assert not check(wrong)["ok"]


def test_an_unread_unknown_write_can_explain_a_failed_cas() -> None:
    history = [put(0, "a", 0, 1, 5),
               put(1, "b", 2, None, None),                            # outcome unknown
               Op(2, "cas", "k", "c", 5, 10, 11, False, None, None)]  # failed: index moved
    assert check(history)["ok"]
    # Without the unknown write, the same failure is impossible.
    assert not check([history[0], history[2]])["ok"]

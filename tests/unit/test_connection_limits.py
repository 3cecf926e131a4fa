"""The API server's head verdicts and its connection guard, without sockets."""

from __future__ import annotations

import pytest

from meshlet.api.connection_limits import (
    WAIT,
    ConnectionGuard,
    Refusal,
    connection_budget,
    head_verdict,
)
from meshlet.http_limits import MAX_HEAD_BYTES, MAX_HEADERS, MAX_URL_BYTES

HEAD = b"GET /v1/status HTTP/1.1\r\nHost: x\r\n\r\n"


def code(verdict: int | Refusal) -> str:
    assert isinstance(verdict, Refusal), verdict
    return f"{verdict.status} {verdict.code}"


def test_a_whole_head_goes_on_and_says_where_it_ends() -> None:
    assert head_verdict(HEAD + b"body") == len(HEAD)
    assert head_verdict(b"GET / HTTP/1.1\r\n\r\n") == len(b"GET / HTTP/1.1\r\n\r\n")


@pytest.mark.parametrize("cut", [1, 5, 20, len(HEAD) - 1])
def test_part_of_a_head_waits(cut: int) -> None:
    assert head_verdict(HEAD[:cut]) == WAIT


@pytest.mark.parametrize(("data", "expected"), [
    (b"GET /\r\n", "400 bad_request"),
    (b"GET /\r\nHost: x\r\n\r\n", "400 bad_request"),
    (b"GET / HTTP/1.1\r\nHost: a\r\nhost: b\r\n\r\n", "400 bad_request"),
    (b"CONNECT a:443 HTTP/1.1\r\n", "501 upgrade_unsupported"),  # before the head ends
    (b"GET / HTTP/1.1\r\nConnection: keep-alive, Upgrade\r\nUpgrade: websocket\r\n\r\n",
     "501 upgrade_unsupported"),
    (b"GET /" + b"u" * MAX_URL_BYTES + b" HTTP/1.1\r\n", "414 url_too_long"),
    (b"GET /" + b"u" * (MAX_URL_BYTES + 100), "414 url_too_long"),  # no line end yet
    (b"GET / HTTP/1.1\r\n" + b"a: b\r\n" * (MAX_HEADERS + 1), "431 head_too_large"),
    (b"GET / HTTP/1.1\r\n" + b"a: b\r\n" * (MAX_HEADERS + 1) + b"\r\n", "431 head_too_large"),
    (b"GET / HTTP/1.1\r\nx: " + b"v" * MAX_HEAD_BYTES, "431 head_too_large"),
])
def test_refused_heads(data: bytes, expected: str) -> None:
    assert code(head_verdict(data)) == expected


@pytest.mark.parametrize("head", [
    b"PUT /v1/kv/k HTTP/1.1\r\nHost: a\r\nX: y\nTransfer-Encoding: chunked\r\n\r\n",
    b"GET / HTTP/1.1\r\nX: y\rz\r\n\r\n",
    b"GET / HTTP/1.1\nHost: a\r\n\r\n",
])
def test_a_cr_or_lf_outside_a_crlf_is_refused(head: bytes) -> None:
    """Split on CRLF only, ``X: y\nTransfer-Encoding: chunked`` would be one header
    here and two to a parser that takes a bare LF as a line end."""
    assert code(head_verdict(head + b"0\r\n\r\n")) == "400 bad_request"


def test_an_upgrade_header_alone_is_not_an_upgrade() -> None:
    head = b"GET / HTTP/1.1\r\nUpgrade: websocket\r\n\r\n"
    assert head_verdict(head) == len(head)


def test_a_head_at_the_limits_goes_on() -> None:
    head = (b"GET /" + b"u" * (MAX_URL_BYTES - 1) + b" HTTP/1.1\r\n"
            + b"a: b\r\n" * MAX_HEADERS + b"\r\n")
    assert head_verdict(head) == len(head)


def test_not_http_at_all_is_left_to_aiohttp() -> None:
    assert head_verdict(b"NOT HTTP AT ALL\r\n\r\n") == len(b"NOT HTTP AT ALL\r\n\r\n")


def test_the_budget_is_a_share_of_the_descriptors() -> None:
    assert connection_budget(256) == 128
    assert connection_budget(1_000_000) == 16384
    assert connection_budget(10) == 8
    assert 8 <= connection_budget() <= 16384


class Conn:
    def __init__(self, name: str, log: list[str]) -> None:
        self.name, self.log = name, log

    def __repr__(self) -> str:
        return self.name

    closed = False

    def timed_out(self) -> None:
        self.log.append(f"{self.name} timed out")

    def refuse_connection(self) -> None:
        self.log.append(f"{self.name} refused")

    def close(self) -> None:
        self.log.append(f"{self.name} closed")


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_full_guard_closes_the_connection_that_waited_longest() -> None:
    log: list[str] = []
    clock = Clock()
    guard = ConnectionGuard(head_timeout=10, max_connections=2, clock=clock)
    a, b, c = Conn("a", log), Conn("b", log), Conn("c", log)
    assert guard.admit(a) and guard.admit(b)
    guard.busy(a)
    guard.await_head(a)  # answered: a waits again, now after b
    assert guard.admit(c)
    assert log == ["b closed"] and guard.evicted == 1
    assert guard.open == {a, c}


def test_full_guard_with_no_one_waiting_refuses_the_new_connection() -> None:
    log: list[str] = []
    guard = ConnectionGuard(head_timeout=10, max_connections=2, clock=Clock())
    a, b, c = Conn("a", log), Conn("b", log), Conn("c", log)
    assert guard.admit(a) and guard.admit(b)
    guard.busy(a)
    guard.busy(b)
    assert not guard.admit(c)
    assert log == ["c refused"] and guard.refused == 1 and guard.open == {a, b}


def test_connections_aiohttp_holds_count_towards_the_limit() -> None:
    log: list[str] = []
    guard = ConnectionGuard(head_timeout=10, max_connections=3, clock=Clock())
    guard.others = lambda: 3
    assert not guard.admit(Conn("a", log))
    assert log == ["a refused"]


def test_late_heads_time_out_oldest_first_and_only_once() -> None:
    log: list[str] = []
    clock = Clock()
    guard = ConnectionGuard(head_timeout=10, max_connections=10, clock=clock)
    a, b = Conn("a", log), Conn("b", log)
    guard.admit(a)
    clock.now += 5
    guard.admit(b)
    clock.now += 5
    guard.expire(clock.now)
    assert log == ["a timed out"]
    guard.expire(clock.now)
    assert log == ["a timed out"]
    clock.now += 5
    guard.expire(clock.now)
    assert log == ["a timed out", "b timed out"] and guard.timed_out == 2


def test_a_connection_that_left_is_forgotten() -> None:
    log: list[str] = []
    clock = Clock()
    guard = ConnectionGuard(head_timeout=1, max_connections=10, clock=clock)
    a = Conn("a", log)
    guard.admit(a)
    guard.leave(a)
    clock.now += 5
    guard.expire(clock.now)
    assert log == [] and not guard.open and not guard.waiting


def test_a_connection_awaiting_its_body_times_out_and_can_be_evicted() -> None:
    """A head alone does not take a connection off the clock: its body has the same
    time again, and at the limit it may be closed to make room like one awaiting a head."""
    log: list[str] = []
    clock = Clock()
    guard = ConnectionGuard(head_timeout=10, max_connections=2, clock=clock)
    a, b, c = Conn("a", log), Conn("b", log), Conn("c", log)
    assert guard.admit(a) and guard.admit(b)
    clock.now += 5
    guard.await_body(a)  # a's head came; its body has not
    guard.busy(b)  # b's whole request came: being answered
    assert guard.admit(c)
    assert log == ["a closed"] and guard.open == {b, c}
    guard.await_body(c)
    clock.now += 10
    guard.expire(clock.now)
    assert log == ["a closed", "c timed out"]


def test_a_connection_closed_elsewhere_makes_no_room() -> None:
    """aiohttp's connections wait in the same list; one it has closed is passed over."""
    log: list[str] = []
    guard = ConnectionGuard(head_timeout=10, max_connections=2, clock=Clock())
    gone, a = Conn("gone", log), Conn("a", log)
    gone.closed = True
    guard.waiting[gone] = 0.0
    guard.others = lambda: 2
    assert not guard.admit(a)
    assert log == ["a refused"] and not guard.waiting and guard.evicted == 0

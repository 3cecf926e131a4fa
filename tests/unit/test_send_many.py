"""One answer written to many sockets (api/send_many, compiled or pure Python) and
split over threads (api/parallel_send): every socket gets the bytes once, whole or
with the count the kernel took, and a failed send reports its errno."""

from __future__ import annotations

import contextlib
import errno
import socket
import threading
from array import array
from collections.abc import Iterator

import pytest

from meshlet.api import parallel_send, send_many
from meshlet.api.parallel_send import Senders

ANSWER = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n[]"


@contextlib.contextmanager
def socket_pairs(count: int) -> Iterator[list[tuple[socket.socket, socket.socket]]]:
    pairs = [socket.socketpair() for _ in range(count)]
    try:
        for ours, _ in pairs:
            ours.setblocking(False)
        yield pairs
    finally:
        for ours, theirs in pairs:
            ours.close()
            theirs.close()


def fds_of(pairs: list[tuple[socket.socket, socket.socket]]) -> array[int]:
    return array("i", [ours.fileno() for ours, _ in pairs])


def received(sock: socket.socket) -> bytes:
    sock.setblocking(False)
    chunks = []
    with contextlib.suppress(BlockingIOError):
        while chunk := sock.recv(1 << 16):
            chunks.append(chunk)
    return b"".join(chunks)


def test_each_socket_in_the_range_gets_the_answer_once() -> None:
    with socket_pairs(6) as pairs:
        sent = array("q", [7] * 6)
        send_many.send_each(fds_of(pairs), ANSWER, sent, 1, 5)
        assert list(sent) == [7, *[len(ANSWER)] * 4, 7]  # outside the range: untouched
        assert [received(theirs) for _, theirs in pairs] == \
            [b"", ANSWER, ANSWER, ANSWER, ANSWER, b""]


def test_a_closed_peer_and_a_full_buffer_report_what_happened() -> None:
    """No SIGPIPE: a peer gone is an errno; a full buffer takes part or nothing."""
    big = b"x" * (1 << 20)
    with socket_pairs(3) as pairs:
        pairs[0][1].close()
        sent = array("q", [0] * 3)
        send_many.send_each(fds_of(pairs), big, sent, 0, 3)
        assert sent[0] == -errno.EPIPE
        assert 0 < sent[1] < len(big) and sent[1] == sent[2]  # what the buffer held
        send_many.send_each(fds_of(pairs), big, sent, 1, 3)
        assert list(sent[1:]) == [-errno.EAGAIN] * 2  # full: none of it this time


def test_a_bad_descriptor_is_an_errno_too() -> None:
    sent = array("q", [0])
    send_many.send_each(array("i", [-1]), ANSWER, sent, 0, 1)
    assert sent[0] == -errno.EBADF


@pytest.mark.parametrize("ways", [1, 2, 3])
def test_the_senders_split_a_batch_and_every_socket_gets_it_once(ways: int) -> None:
    count = parallel_send.PARALLEL_FROM + 45
    calls: list[tuple[str, int, int]] = []
    real = send_many.send_each

    def recording(fds: array[int], data: bytes, sent: array[int], start: int,
                  stop: int) -> None:
        calls.append((threading.current_thread().name, start, stop))
        real(fds, data, sent, start, stop)

    senders = Senders(ways)
    try:
        with socket_pairs(count) as pairs, pytest.MonkeyPatch.context() as patch:
            patch.setattr(send_many, "send_each", recording)
            sent = senders.send(fds_of(pairs), ANSWER)
            assert list(sent) == [len(ANSWER)] * count
            assert all(received(theirs) == ANSWER for _, theirs in pairs)
        assert sorted((start, stop) for _, start, stop in calls) == \
            [(count * k // ways, count * (k + 1) // ways) for k in range(ways)]
        # The caller's thread takes the first share, pooled threads the others.
        caller = threading.current_thread().name
        assert [name == caller for name, _, _ in sorted(calls, key=lambda c: c[1])] == \
            [True] + [False] * (ways - 1)
    finally:
        senders.close()


def test_a_small_batch_stays_on_the_callers_thread() -> None:
    senders = Senders(2)
    with socket_pairs(3) as pairs:
        assert list(senders.send(fds_of(pairs), ANSWER)) == [len(ANSWER)] * 3
    assert senders.pool is None  # no thread woken for three sockets


def test_threads_share_a_batch_only_where_the_sends_release_the_gil() -> None:
    assert (parallel_send.ways_here() > 1) == (send_many.COMPILED and
                                              len(__import__("os").sched_getaffinity(0)) > 1)


def test_the_builds_refuse_a_range_outside_the_arrays_before_sending() -> None:
    with socket_pairs(2) as pairs:
        sent = array("q", [5, 5])
        for start, stop in ((0, 3), (-1, 1)):
            with pytest.raises(IndexError):
                send_many.send_each(fds_of(pairs), ANSWER, sent, start, stop)
        send_many.send_each(fds_of(pairs), b"", sent, 0, 2)  # nothing to send
        assert list(sent) == [5, 5]
        assert [received(theirs) for _, theirs in pairs] == [b"", b""]


def test_without_a_thread_the_caller_sends_every_share(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """A pids limit, say: the batch is still sent whole, once, by the caller."""
    def no_thread(*args: object, **kwargs: object) -> None:
        raise RuntimeError("can't start new thread")
    senders = Senders(3)
    monkeypatch.setattr(parallel_send.ThreadPoolExecutor, "submit", no_thread)
    count = parallel_send.PARALLEL_FROM + 1
    try:
        with socket_pairs(count) as pairs:
            assert list(senders.send(fds_of(pairs), ANSWER)) == [len(ANSWER)] * count
            assert all(received(theirs) == ANSWER for _, theirs in pairs)
    finally:
        senders.close()

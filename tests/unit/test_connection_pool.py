"""The connection pool's decisions (meshlet/proxy/pool.py), with no sockets: fake
connections and waiters, and times passed in as numbers; and what the cluster tells
its pool."""

from __future__ import annotations

from dataclasses import dataclass

from meshlet.proxy.cluster import Cluster
from meshlet.proxy.config import ClusterConfig, Endpoint
from meshlet.proxy.pool import (
    CLOSE,
    HAND_OFF,
    KEEP,
    MAX_IDLE_PER_ENDPOINT,
    OPEN,
    QUEUED,
    REFUSED,
    REPLACE,
    USE,
    ConnectionPool,
)

A, B, C = ("10.0.0.1", 80), ("10.0.0.2", 80), ("10.0.0.3", 80)


@dataclass(eq=False)
class Conn:
    key: tuple[str, int]
    closed: bool = False
    busy: bool = False
    idle_since: float = 0.0
    counted: bool = True  # holds a slot, as a connection opened in one does

    @property
    def usable(self) -> bool:
        return not self.closed and not self.busy


@dataclass(eq=False)
class Waiter:
    name: str
    finished: bool = False


def pool(max_connections: int = 2, max_pending: int = 1, max_requests: int = 10,
         max_retries: int = 1,
         live: tuple[tuple[str, int], ...] = (A, B, C)) -> ConnectionPool:
    p = ConnectionPool()
    p.configure(max_connections, max_pending, max_requests, max_retries)
    assert p.set_endpoints(set(live)) == []
    return p


def test_opens_up_to_max_connections_then_queues_then_refuses() -> None:
    p = pool(max_connections=2, max_pending=1)
    first, second, third, fourth = (Waiter(n) for n in "abcd")
    assert p.acquire(A, first) == (OPEN, None)
    assert p.acquire(B, second) == (OPEN, None)  # the limit is the cluster's, not per endpoint
    assert p.acquire(A, third) == (QUEUED, None)
    assert p.acquire(A, fourth) == (REFUSED, None)
    assert (p.connections, list(p.pending)) == (2, [third])


def test_a_released_connection_is_reused_most_recent_first() -> None:
    p = pool()
    old, new = Conn(A), Conn(A)
    assert p.release(old, now=1.0) == (KEEP, None)
    assert p.release(new, now=2.0) == (KEEP, None)
    assert (old.idle_since, new.idle_since) == (1.0, 2.0)
    assert p.acquire(A, Waiter("w")) == (USE, new)
    assert p.acquire(B, Waiter("w")) == (OPEN, None)  # idle ones serve only their endpoint


def test_unusable_idle_connections_are_skipped() -> None:
    p = pool()
    good, gone = Conn(A), Conn(A)
    p.release(good, 1.0)
    p.release(gone, 2.0)
    gone.closed = True  # closing: its connection_lost will tell the pool
    assert p.acquire(A, Waiter("w")) == (USE, good)
    assert p.idle[A] == []


def test_a_retry_after_a_stale_connection_opens_a_new_one() -> None:
    p = pool()
    p.release(Conn(A), 1.0)
    assert p.acquire(A, Waiter("w"), reuse=False) == (OPEN, None)
    assert len(p.idle[A]) == 1


def test_release_hands_the_connection_to_the_first_live_waiter() -> None:
    p = pool(max_connections=1, max_pending=3)
    gone, waiting = Waiter("gone"), Waiter("waiting")
    p.acquire(A, Waiter("holder"))
    p.acquire(A, gone)
    p.acquire(B, waiting)  # any endpoint: a waiter takes the connection it is handed
    gone.finished = True
    conn = Conn(A)
    assert p.release(conn, 5.0) == (HAND_OFF, waiting)
    assert not p.pending and p.connections == 1
    assert p.release(conn, 6.0) == (KEEP, None)


def test_a_cancelled_waiter_leaves_the_queue() -> None:
    p = pool(max_connections=1, max_pending=1)
    waiter = Waiter("w")
    p.acquire(A, Waiter("holder"))
    assert p.acquire(A, waiter) == (QUEUED, None)
    p.cancel(waiter)
    p.cancel(waiter)  # twice is fine: it may have been handed over meanwhile
    assert p.acquire(A, Waiter("next")) == (QUEUED, None)


def full_with_waiters(key: tuple[str, int]) -> tuple[ConnectionPool, Conn, Waiter]:
    """A pool at its one connection (to A), a finished and a live waiter for ``key``."""
    p = pool(max_connections=1, max_pending=2)
    conn, finished, waiting = Conn(A), Waiter("finished"), Waiter("waiting")
    p.acquire(A, Waiter("holder"))
    p.acquire(key, finished)
    p.acquire(key, waiting)
    finished.finished = True
    return p, conn, waiting


def test_a_lost_connection_frees_its_slot_for_a_waiter() -> None:
    p, conn, waiting = full_with_waiters(A)
    assert p.lost(conn, was_idle=False) is waiting
    assert p.connections == 1  # the slot is reserved for the waiter's new connection
    assert p.freed() is None and p.connections == 0


def test_a_lost_idle_connection_is_forgotten() -> None:
    p = pool()
    conn = Conn(A)
    p.acquire(A, Waiter("w"))
    p.release(conn, 1.0)
    assert p.lost(conn, was_idle=True) is None
    assert (p.idle[A], p.connections) == ([], 0)
    assert p.lost(Conn(A), was_idle=True) is None  # never pooled: nothing to forget


def test_idle_connections_are_capped_per_endpoint() -> None:
    p = pool()
    for _ in range(MAX_IDLE_PER_ENDPOINT):
        assert p.release(Conn(A), 1.0) == (KEEP, None)
    assert p.release(Conn(A), 1.0) == (CLOSE, None)
    assert p.release(Conn(B), 1.0) == (KEEP, None)


def test_expire_idle_takes_out_what_idled_too_long() -> None:
    p = pool()
    old, fresh = Conn(A), Conn(A)
    p.release(old, 1.0)
    p.release(fresh, 9.0)
    assert p.expire_idle(cutoff=5.0) == [old]
    assert p.idle[A] == [fresh]
    assert p.expire_idle(cutoff=5.0) == []


def test_connections_of_endpoints_that_left_are_closed() -> None:
    p = pool()
    idle_a, busy_a, idle_b = Conn(A), Conn(A), Conn(B)
    p.release(idle_a, 1.0)
    p.release(idle_b, 1.0)
    assert p.set_endpoints({B}) == [idle_a]
    assert p.release(busy_a, 2.0) == (CLOSE, None)  # released after A left
    assert p.acquire(A, Waiter("w")) == (OPEN, None)
    assert p.idle == {B: [idle_b]}


def test_close_gives_back_every_idle_connection_and_keeps_no_more() -> None:
    p = pool()
    a, b = Conn(A), Conn(B)
    p.release(a, 1.0)
    p.release(b, 1.0)
    assert p.close() == [a, b]
    assert p.release(Conn(A), 2.0) == (CLOSE, None)
    assert "closed" in repr(p)


def test_request_and_retry_breakers() -> None:
    p = pool(max_requests=2, max_retries=1)
    assert p.admit_request() and p.admit_request()
    assert not p.admit_request()
    p.request_done()
    assert p.admit_request()
    assert p.retry_room()
    p.retry_started()
    assert not p.retry_room()
    p.retry_done()
    assert p.retry_room()
    assert (p.active_requests, p.active_retries) == (2, 0)


def test_new_limits_keep_the_counts() -> None:
    p = pool(max_connections=1, max_pending=1)
    p.acquire(A, Waiter("holder"))
    p.configure(2, 1, 10, 1)
    assert p.acquire(A, Waiter("w")) == (OPEN, None)
    assert p.connections == 2
    assert repr(p).startswith("<ConnectionPool conns=2/2 idle=0 pending=0")


def test_at_the_limit_the_oldest_idle_connection_of_another_endpoint_makes_room() -> None:
    p = pool(max_connections=2, max_pending=1)
    older, newer = Conn(A), Conn(B)
    p.acquire(A, Waiter("a"))
    p.acquire(B, Waiter("b"))
    p.release(older, 1.0)
    p.release(newer, 2.0)
    # No idle connection to C, none left to open: the oldest idle one is closed for it
    # rather than the request waiting until idle_timeout.
    assert p.acquire(C, Waiter("c")) == (OPEN, older)
    assert (p.connections, p.idle[A], p.idle[B]) == (2, [], [newer])
    assert not older.counted  # its slot is the new connection's now
    assert p.lost(older, was_idle=True) is None and p.connections == 2
    assert p.acquire(C, Waiter("d")) == (OPEN, newer)
    assert p.acquire(C, Waiter("e")) == (QUEUED, None)  # nothing idle: wait


def test_a_retry_after_a_stale_connection_at_the_limit_replaces_an_idle_one() -> None:
    p = pool(max_connections=1, max_pending=1)
    idle = Conn(A)
    p.acquire(A, Waiter("a"))
    p.release(idle, 1.0)
    assert p.acquire(A, Waiter("retry"), reuse=False) == (OPEN, idle)
    assert p.connections == 1 and not p.pending


def test_a_slot_is_given_back_once_however_often_its_loss_is_reported() -> None:
    p = pool(max_connections=1, max_pending=2)
    conn, waiting = Conn(A), Waiter("waiting")
    p.acquire(A, Waiter("holder"))
    p.acquire(A, waiting)
    assert p.lost(conn, was_idle=False) is waiting
    # A connect that failed and the transport it had made closing: the same loss twice.
    assert p.lost(conn, was_idle=False) is None
    assert p.connections == 1  # the waiter's, nothing more freed


def test_a_waiter_is_not_handed_a_connection_to_an_endpoint_that_left() -> None:
    p, conn, waiting = full_with_waiters(B)
    p.set_endpoints({B})
    # Closed instead, and its slot goes to the waiter, which opens its own connection.
    assert p.release(conn, 5.0) == (REPLACE, waiting)
    assert not conn.counted and p.connections == 1 and not p.pending
    assert p.lost(conn, was_idle=False) is None and p.connections == 1


def test_a_waiter_is_not_handed_a_connection_to_an_endpoint_taking_no_traffic() -> None:
    p = pool(max_connections=1, max_pending=1)
    conn, waiting = Conn(A), Waiter("waiting")
    p.acquire(A, Waiter("holder"))
    p.acquire(A, waiting)
    p.resting = {A}  # ejected (or unhealthy): still in the cluster
    assert p.release(conn, 5.0) == (REPLACE, waiting)
    p.resting = set()
    assert p.release(Conn(A), 6.0) == (KEEP, None)
    p.resting = {A}
    assert p.release(Conn(A), 7.0) == (KEEP, None)  # none waits: kept for its return


def test_no_waiter_left_then_a_connection_to_a_resting_endpoint_is_kept() -> None:
    p = pool(max_connections=1, max_pending=1)
    conn, gone = Conn(A), Waiter("gone")
    p.acquire(A, Waiter("holder"))
    p.acquire(A, gone)
    gone.finished = True
    p.resting = {A}
    assert p.release(conn, 5.0) == (KEEP, None)
    assert conn.counted and p.connections == 1


def test_the_cluster_tells_its_pool_which_endpoints_take_no_traffic() -> None:
    a, b = Endpoint("a", *A), Endpoint("b", *B)
    sick = Endpoint("c", *C, healthy=False)
    cluster = Cluster(ClusterConfig("svc", (a, b, sick), {
        "outlier_consecutive_failures": 1, "outlier_max_ejection_percent": 100,
        "max_connections": 1}), clock=lambda: 0.0)
    p = cluster.pool
    assert p.resting == {C}
    assert cluster.record_outcome(cluster.states[A], True)  # ejected
    assert p.resting == {A, C}
    waiting = Waiter("waiting")
    p.acquire(A, Waiter("holder"))
    p.acquire(B, waiting)
    assert p.release(Conn(A), 1.0) == (REPLACE, waiting)

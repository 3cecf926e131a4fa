"""One cluster's upstream connections and circuit breakers: the pool decides, without I/O.

The pool keeps the books: idle connections per endpoint (keep-alive reuse), connections
open or opening against ``max_connections``, requests waiting for one against
``max_pending_requests``, and active requests and retries against their breakers. Its
methods change that state and return what to do; the listener's ``Connector`` (and the
exchange, through it) does it, as httpcore's pool assigns and its caller performs:

* ``acquire(key, waiter)`` -> (USE, an idle connection), (OPEN, None): a slot is
  reserved, open one; (OPEN, an idle connection): at the limit, close that one (the
  oldest idle, of any endpoint) and open one in its slot, as Envoy's pool does;
  (QUEUED, None): ``waiter`` waits for a connection; (REFUSED, None): too many pending
  requests.
* ``release(conn, now)`` -> (HAND_OFF, a waiter to give ``conn`` to), (KEEP, None): kept
  idle; (CLOSE, None): close ``conn``; (REPLACE, a waiter): close ``conn``, whose
  endpoint left or takes no traffic, and have the waiter open one in its slot.
* ``lost(conn)``, once a connection or an attempt to open one is gone: a waiter whose
  connection to open has a reserved slot, or None.
* ``expire_idle``, ``set_endpoints`` and ``close`` return the idle connections to close.

Each slot is given back exactly once: a connection holds one while ``counted``, which
it is from its opening until ``lost`` (a failed connect and the close of the transport
it made are one loss) or until the pool passes its slot on (evicted, replaced).

A waiter is anything with ``finished`` (an exchange): a finished waiter is skipped.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Container, Hashable
from typing import Any, Protocol

MAX_IDLE_PER_ENDPOINT = 64

USE, OPEN, QUEUED, REFUSED = range(4)  # what acquire decided
HAND_OFF, KEEP, CLOSE, REPLACE = range(4)  # what release decided
# The answers that carry nothing, made once: no tuple per call on the hot path.
OPEN_SLOT: tuple[int, Any] = (OPEN, None)
QUEUED_WAITER: tuple[int, Any] = (QUEUED, None)
REFUSED_WAITER: tuple[int, Any] = (REFUSED, None)
KEPT: tuple[int, Any] = (KEEP, None)
CLOSING: tuple[int, Any] = (CLOSE, None)


class PooledConnection(Protocol):
    idle_since: float
    counted: bool  # holds one of the pool's slots (True from its opening)

    @property
    def key(self) -> Hashable: ...  # its endpoint's

    @property
    def usable(self) -> bool: ...


class Waiter(Protocol):
    finished: bool


class ConnectionPool:
    def __init__(self) -> None:
        self.idle: dict[Hashable, list[Any]] = {}
        self.live: Container[Hashable] = ()  # keys of the cluster's endpoints
        self.resting: Container[Hashable] = ()  # of those, the ones taking no traffic
        self.closed = False
        self.connections = 0  # open or opening
        self.pending: deque[Any] = deque()
        self.active_requests = 0
        self.active_retries = 0
        self.max_connections = self.max_pending_requests = 1024
        self.max_requests = self.max_retries = 1024

    def __repr__(self) -> str:
        idle = sum(len(conns) for conns in self.idle.values())
        return (f"<ConnectionPool conns={self.connections}/{self.max_connections} "
                f"idle={idle} pending={len(self.pending)} requests={self.active_requests} "
                f"retries={self.active_retries}{' closed' if self.closed else ''}>")

    def configure(self, max_connections: int, max_pending_requests: int, max_requests: int,
                  max_retries: int) -> None:
        """New breaker limits; the counts stay (in-flight requests keep their claims)."""
        self.max_connections = max_connections
        self.max_pending_requests = max_pending_requests
        self.max_requests = max_requests
        self.max_retries = max_retries

    # -- requests and retries (the breakers) ------------------------------------------

    def admit_request(self) -> bool:
        """Count one more active request, or False if ``max_requests`` are active."""
        if self.active_requests >= self.max_requests:
            return False
        self.active_requests += 1
        return True

    def request_done(self) -> None:
        self.active_requests -= 1

    def retry_room(self) -> bool:
        """Whether one more request may start retrying under ``max_retries``."""
        return self.active_retries < self.max_retries

    def retry_started(self) -> None:
        self.active_retries += 1

    def retry_done(self) -> None:
        self.active_retries -= 1

    # -- connections ------------------------------------------------------------------

    def acquire(self, key: Hashable, waiter: Waiter, reuse: bool = True) -> tuple[int, Any]:
        """A connection to endpoint ``key`` for ``waiter``: an idle one unless ``reuse``
        is False (a retry after a stale one), else a new one (in the slot of the oldest
        idle one at the limit), else a place in the queue."""
        if reuse:
            idle = self.idle.get(key)
            if idle is not None:
                while idle:
                    conn = idle.pop()
                    if conn.usable:  # closed ones are being lost: lost() counts them
                        return USE, conn
        if self.connections < self.max_connections:
            self.connections += 1  # counted while opening; lost() if that fails
            return OPEN_SLOT
        if self.idle:
            evicted = self.take_oldest_idle()
            if evicted is not None:
                return OPEN, evicted
        if len(self.pending) >= self.max_pending_requests:
            return REFUSED_WAITER
        self.pending.append(waiter)
        return QUEUED_WAITER

    def take_oldest_idle(self) -> Any:
        """Take out the connection idle the longest, its slot passed on; None if none."""
        oldest: Any = None
        for idle in self.idle.values():
            if idle and (oldest is None or idle[0].idle_since < oldest.idle_since):
                oldest = idle[0]  # each list is in the order released
        if oldest is not None:
            self.idle[oldest.key].pop(0)
            oldest.counted = False
        return oldest

    def cancel(self, waiter: Waiter) -> None:
        """``waiter`` no longer waits (finished, timed out, client gone)."""
        try:
            self.pending.remove(waiter)
        except ValueError:
            pass

    def release(self, conn: PooledConnection, now: float) -> tuple[int, Any]:
        """A request is done with ``conn``, which can serve another: a waiting request
        gets it first (or its slot, if its endpoint left or takes no traffic), else it is
        kept idle while its endpoint is known and there is room."""
        pending = self.pending
        key = conn.key
        while pending:
            waiter = pending.popleft()
            if not waiter.finished:
                if key in self.resting or key not in self.live:
                    conn.counted = False
                    return REPLACE, waiter
                return HAND_OFF, waiter
        if self.closed:
            return CLOSING
        idle = self.idle.get(key)
        if idle is None:
            if key not in self.live:  # its endpoint left the cluster
                return CLOSING
            idle = self.idle[key] = []
        if len(idle) >= MAX_IDLE_PER_ENDPOINT:
            return CLOSING
        conn.idle_since = now
        idle.append(conn)
        return KEPT

    def lost(self, conn: PooledConnection, was_idle: bool) -> Waiter | None:
        """``conn`` closed, or failed to open: forget it; like ``freed``, the waiter that
        may open one now. A loss reported twice, or of a connection whose slot was passed
        on, frees nothing."""
        if was_idle:
            idle = self.idle.get(conn.key)
            if idle is not None:
                try:
                    idle.remove(conn)
                except ValueError:
                    pass  # taken out already (expired, its endpoint left)
        if not conn.counted:
            return None
        conn.counted = False
        return self.freed()

    def freed(self) -> Waiter | None:
        """A slot is free (``lost`` calls it once a connection's): the first live waiter,
        with a slot reserved for the connection it is to open, if there is room now."""
        self.connections -= 1
        pending = self.pending
        while pending and self.connections < self.max_connections:
            waiter: Waiter = pending.popleft()
            if not waiter.finished:
                self.connections += 1
                return waiter
        return None

    # -- idle connections, in bulk ----------------------------------------------------

    def expire_idle(self, cutoff: float) -> list[Any]:
        """Take out the connections idle since before ``cutoff``: the caller closes them."""
        stale: list[Any] = []
        for key, idle in self.idle.items():
            kept: list[Any] = []
            for conn in idle:
                (stale if conn.idle_since < cutoff else kept).append(conn)
            self.idle[key] = kept
        return stale

    def set_endpoints(self, live: Container[Hashable]) -> list[Any]:
        """The cluster's endpoints changed to ``live``: the idle connections of those that
        left, to close. Busy ones are closed when released."""
        self.live = live
        closing: list[Any] = []
        for key in [key for key in self.idle if key not in live]:
            closing += self.idle.pop(key)
        return closing

    def close(self) -> list[Any]:
        """From now on nothing is kept: the idle connections, to close."""
        self.closed = True
        closing: list[Any] = []
        for idle in self.idle.values():
            closing += idle
        self.idle = {}
        return closing

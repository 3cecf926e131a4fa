"""Blocking watches of a service's instances, parked on the fast lane and answered
together.

Every agent holds ``GET /v1/services/NAME/instances?index=N&wait=D`` open for each
service its sidecars call, so one registration wakes thousands of them. Through aiohttp
each woken watch costs a task, a request, a route, a list of instances, a JSON
encoding and a response object, one after another; the thousandth answer leaves
after all of that has been done a thousand times. Here a parked watch is a row in a
table: one change looks up the service's index, encodes the answer once for all the
watches of that service (once more for those asking ``passing``, once more for
those closing), and writes those same bytes to every connection. The answers are
the route's (``Api.instances``): the same body, ``X-Meshlet-Index`` and read
headers, and the same ``meshlet_api_blocking_*`` metrics.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import json
from collections.abc import Callable, Iterator
from typing import Any, Protocol

from meshlet.api import fast_lane
from meshlet.api.watch_request import WatchGet


class Watcher(Protocol):
    """A connection with a parked watch (a FastLane)."""

    def answer_watch(self, answer: bytes, keep_alive: bool, deadline: float) -> None: ...


# (watcher, answer, keep-alive) for each watch one change answers, and the next head's
# deadline.
Deliver = Callable[[list[tuple[Any, bytes, bool]], float], None]


class Parked:
    __slots__ = ("request", "timer")

    def __init__(self, request: WatchGet, timer: asyncio.TimerHandle) -> None:
        self.request = request
        self.timer = timer


class WatchHub:
    """The parked watches, by service; ``start`` follows the state machine's changes."""

    def __init__(self, api: Any, deadline: Callable[[], float], deliver: Deliver) -> None:
        """``deadline``: when an answered connection's next head is due (the guard's);
        ``deliver``: writes one change's answers (``fast_lane.answer_watches``)."""
        self.api = api
        self.deadline = deadline
        self.deliver = deliver
        self.groups: dict[str, dict[Watcher, Parked]] = {}
        self.lowest: dict[str, int] = {}  # the least index a service's watches hold
        self.catalog = -1  # the catalog's index at the last fan-out
        self.unsubscribe: Callable[[], None] | None = None
        self.pending: asyncio.Handle | None = None  # a fan-out at the end of this turn
        metrics = api.metrics
        self.waiting = metrics.blocking_queries
        self.changed = metrics.blocking_returns.labels("changed")
        self.timeout = metrics.blocking_returns.labels("timeout")

    def __len__(self) -> int:
        return sum(len(group) for group in self.groups.values())

    def start(self) -> None:
        self.unsubscribe = self.api.node.on_change(self.changed_soon)

    def stop(self) -> None:
        if self.unsubscribe is not None:
            self.unsubscribe()
            self.unsubscribe = None
        if self.pending is not None:
            self.pending.cancel()
        for group in self.groups.values():
            for parked in group.values():
                parked.timer.cancel()
                self.waiting.dec()
        self.groups.clear()
        self.lowest.clear()

    def current(self, service: str) -> int:
        return int(self.api.sm.service_index.get(service, 0))

    def answer(self, service: str, passing: bool, index: int, keep_alive: bool) -> bytes:
        """The route's answer: the instances as they are now, at ``index``."""
        found = self.api.sm.service_instances(service, passing_only=passing)
        body = json.dumps([instance.to_dict() for instance in found]).encode()
        headers = {"X-Meshlet-Index": str(index), **self.api.node.read_headers()}
        return fast_lane.response(200, body, headers, keep_alive)

    def watch(self, lane: Watcher, request: WatchGet) -> None:
        """Answer ``request`` now if its service has moved past its index, else park it
        until it does or its wait runs out."""
        current = self.current(request.service)
        if current > request.index:
            self.changed.inc()
            lane.answer_watch(self.answer(request.service, request.passing, current,
                                          request.keep_alive), request.keep_alive,
                              self.deadline())
            return
        timer = asyncio.get_running_loop().call_later(request.wait, self.expire, lane,
                                                      request.service)
        group = self.groups.setdefault(request.service, {})
        group[lane] = Parked(request, timer)
        self.lowest[request.service] = min(self.lowest.get(request.service, request.index),
                                           request.index)
        self.waiting.inc()

    def forget(self, lane: Watcher, service: str) -> Parked | None:
        """Unpark ``lane``'s watch (its connection closed, or it is answered)."""
        group = self.groups.get(service)
        parked = group.pop(lane, None) if group is not None else None
        if parked is None:
            return None
        parked.timer.cancel()
        self.waiting.dec()
        if not group:
            del self.groups[service]
            del self.lowest[service]
        return parked

    def expire(self, lane: Watcher, service: str) -> None:
        """The wait ran out: the answer is the state as it is, as the route gives it."""
        parked = self.forget(lane, service)
        if parked is None:
            return
        request = parked.request
        current = self.current(service)
        (self.changed if current > request.index else self.timeout).inc()
        lane.answer_watch(self.answer(service, request.passing, current,
                                      request.keep_alive), request.keep_alive, self.deadline())

    def changed_soon(self) -> None:
        """The state changed: fan out once this turn of the loop is done, so that the
        entries one Ready applies are answered together."""
        if self.pending is None:
            loop = asyncio.get_running_loop()
            self.pending = loop.call_soon(self.behind_writers, loop)

    def behind_writers(self, loop: asyncio.AbstractEventLoop) -> None:
        """One turn more: a write this change commits resumes its request in the turn
        after the one that applied it, so the fan-out (tens of ms for 10,000
        watchers) queues behind it and the writer's answer leaves first."""
        self.pending = loop.call_soon(self.fan_out)

    def fan_out(self) -> None:
        """Answer every parked watch whose service moved past its index."""
        self.pending = None
        catalog = self.api.sm.catalog_index  # moves with every service's index
        if catalog == self.catalog:
            return  # a KV put, say: no service moved
        self.catalog = catalog
        moved = [s for s, low in self.lowest.items() if self.current(s) > low]
        if not moved:
            return
        # The loop makes garbage but no cycles; a collection in the middle of it (a
        # full one scans every parked connection's objects) would only delay answers.
        with collection_paused():
            for service in moved:
                self.answer_group(service)

    def answer_group(self, service: str) -> None:
        """The loop over a service's watches is the whole cost of a change (a send
        each), so it does no more than it must: one encoding per answer's shape, one
        delivery."""
        current = self.current(service)
        group = self.groups.pop(service)
        del self.lowest[service]
        answers: dict[tuple[bool, bool], bytes] = {}
        batch = []
        for lane, parked in group.items():
            request = parked.request
            if request.index >= current:  # a watch of an index still to come
                self.groups.setdefault(service, {})[lane] = parked
                self.lowest[service] = min(self.lowest.get(service, request.index),
                                           request.index)
                continue
            parked.timer.cancel()
            shape = (request.passing, request.keep_alive)
            answer = answers.get(shape)
            if answer is None:
                answer = answers[shape] = self.answer(service, request.passing, current,
                                                      request.keep_alive)
            batch.append((lane, answer, request.keep_alive))
        self.waiting.dec(len(batch))
        self.changed.inc(len(batch))
        self.deliver(batch, self.deadline())


@contextlib.contextmanager
def collection_paused() -> Iterator[None]:
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()

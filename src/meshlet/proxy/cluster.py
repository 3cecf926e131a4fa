"""One upstream service at run time: endpoints and their load, availability (health
from the catalog combined with outlier ejection), balancers per subset and shard,
routing, the retry budget, and its ``ConnectionPool`` (connections and breakers).

No I/O: the clock and the random source are injected, so a cluster can be driven in
tests exactly as the protocols drive it. The connections its pool lets go (idle too
long, of endpoints that left, at close) are closed here, through their own ``close``.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Hashable
from typing import TYPE_CHECKING, Any

from meshlet.proxy import pool as pool_module
from meshlet.proxy.config import ClusterConfig, Endpoint
from meshlet.proxy.lb import HASH_POLICIES, Balancer, PickContext, make_balancer
from meshlet.proxy.lb.base import EndpointState
from meshlet.proxy.partition import PartitionRule, Refusal
from meshlet.proxy.request_view import RequestView
from meshlet.proxy.resilience.outlier import OutlierDetector
from meshlet.proxy.resilience.retry_budget import RetryBudget
from meshlet.proxy.routing import RouteChoice, RouteTable, Subset, raw_path
from meshlet.proxy.settings import Settings, parsed, validate_settings

if TYPE_CHECKING:  # cimported by the compiled build (cluster.pxd)
    from meshlet.proxy.pool import ConnectionPool

BalancerKey = tuple[Subset, str | None]


class Target:
    """Where one request goes: its balancer, deadline and route rewrites (an extension
    type in the compiled build, so a request reads these as C fields)."""

    def __init__(self, balancer: Balancer, timeout: float, route: RouteChoice | None,
                 hash_key: bytes | None, key: BalancerKey) -> None:
        self.balancer = balancer
        self.timeout = timeout
        self.route = route
        self.hash_key = hash_key
        self.key = key

    def __repr__(self) -> str:
        return f"<Target {self.key} timeout={self.timeout}s hash_key={self.hash_key!r}>"


class Cluster:
    def __init__(self, config: ClusterConfig, clock: Callable[[], float],
                 rng: random.Random | None = None, zone: str = "", node: str = "") -> None:
        self.name = config.name
        self.clock = clock
        self.rng = rng or random.Random()
        self.zone = zone
        self.node = node
        self.states: dict[tuple[str, int], EndpointState] = {}
        self.available: list[EndpointState] = []
        self.balancers: dict[BalancerKey, Balancer] = {}
        self.members: dict[BalancerKey, list[EndpointState]] = {}
        # Made through its module: a compiled build cimports the class (cluster.pxd).
        self.pool: ConnectionPool = pool_module.ConnectionPool()
        # HTTP/2 connections to endpoints of an ``http`` listener, made for the gRPC
        # calls it carries (h2_pool), kept apart: a stream never serves HTTP/1.1.
        self._h2_pool: ConnectionPool | None = None
        self.config = config
        self.settings = Settings()
        self.raw_settings: dict[str, Any] = {}
        self.outlier = OutlierDetector()
        self.budget = RetryBudget()
        self.routes: RouteTable | None = None
        self.partition: PartitionRule | None = None
        self.needs_view = False
        self._default_target: Target | None = None
        # Targets by (id of the route choice, shard): route choices live as long as the
        # settings that made them, and this is emptied with them.
        self._targets: dict[tuple[int, str | None], Target] = {}
        self._ctx = PickContext(self.rng)
        self.update(config)

    def __repr__(self) -> str:
        return (f"<Cluster {self.name} endpoints={len(self.states)} "
                f"available={len(self.available)} {self.pool!r}>")

    # -- configuration ----------------------------------------------------------------

    def update(self, config: ClusterConfig) -> None:
        """Swap in a new endpoint set and settings; requests in flight keep theirs."""
        raw = validate_settings(config.settings)
        if raw != self.raw_settings or not self.balancers:
            self.apply_settings(raw)
        self.config = config
        now = self.clock()
        known = self.states
        neutral = (sum(s.rtt for s in known.values()) / len(known)) if known else None
        states: dict[tuple[str, int], EndpointState] = {}
        for endpoint in config.endpoints:
            state = known.get(endpoint.key)
            if state is None or state.endpoint != endpoint:
                fresh = EndpointState(endpoint, now=now) if neutral is None \
                    else EndpointState(endpoint, rtt=neutral, now=now)
                if state is not None:  # same address, new details: keep the load counts
                    fresh.outstanding, fresh.rtt, fresh.stamp = \
                        state.outstanding, state.rtt, state.stamp
                state = fresh
            states[endpoint.key] = state
        self.states = states
        self.outlier.set_population(states)
        for pool in self.pools():
            for conn in pool.set_endpoints(states):
                conn.close()
        self.refresh()

    def apply_settings(self, raw: dict[str, Any]) -> None:
        s = parsed(raw)
        old = self.settings
        self.raw_settings = raw
        self.settings = s
        self.connect_timeout = s.connect_timeout
        self.request_timeout = s.request_timeout
        self.retries = s.retries
        for pool in self.pools():
            pool.configure(s.max_connections, s.max_pending_requests, s.max_requests,
                           s.max_retries)
        if (old.outlier_consecutive_failures, old.outlier_base_ejection_time,
                old.outlier_max_ejection_time, old.outlier_max_ejection_percent) != (
                s.outlier_consecutive_failures, s.outlier_base_ejection_time,
                s.outlier_max_ejection_time, s.outlier_max_ejection_percent):
            self.outlier = OutlierDetector(
                s.outlier_consecutive_failures, s.outlier_base_ejection_time,
                s.outlier_max_ejection_time, s.outlier_max_ejection_percent)
            self.outlier.set_population(self.states)
        if (old.retry_budget_percent, old.retry_budget_min_per_second) != (
                s.retry_budget_percent, s.retry_budget_min_per_second):
            self.budget = RetryBudget(s.retry_budget_percent, s.retry_budget_min_per_second)
        self.routes = RouteTable(s.routes) if s.routes else None
        self.partition = PartitionRule(self.name, s.partition) if s.partition else None
        # A request is viewed (its target and headers decoded) only if something reads
        # more than its method and path: header matches, shards, hash keys.
        self.needs_view = bool((self.routes and self.routes.needs_headers) or self.partition
                               or s.hash_on)
        # Only latency-aware policies read the RTT estimate; others skip its update.
        self.tracks_latency = s.lb == "peak_ewma"
        self.balancers = {}
        self.members = {}
        self._default_target = None
        self._targets = {}

    def refresh(self) -> None:
        """Recompute which endpoints take traffic and re-feed the balancers."""
        ejected = self.outlier.ejected()
        available: list[EndpointState] = []
        resting: set[Hashable] = set()  # the pool hands no waiter a connection to these
        for s in self.states.values():
            if s.endpoint.healthy and s.weight > 0 and s.key not in ejected:
                available.append(s)
            else:
                resting.add(s.key)
        self.available = available
        for pool in self.pools():
            pool.resting = resting
        for key, balancer in self.balancers.items():
            self.feed(key, balancer)

    def feed(self, key: BalancerKey, balancer: Balancer) -> None:
        subset, shard = key
        def member(e: Endpoint) -> bool:
            return (not subset or e.has_labels(subset)) and (
                shard is None or ("shard", shard) in e.meta)
        members = [s for s in self.available if member(s.endpoint)]
        self.members[key] = members
        balancer.reset(members)
        observe = getattr(balancer, "observe_population", None)
        if observe is not None:
            observe([s for s in self.states.values() if member(s.endpoint)])

    def balancer(self, key: BalancerKey) -> Balancer:
        balancer = self.balancers.get(key)
        if balancer is None:
            balancer = make_balancer(self.settings.lb, self.raw_settings, self.zone, self.node)
            self.feed(key, balancer)
            self.balancers[key] = balancer
        return balancer

    # -- per request ------------------------------------------------------------------

    def resolve(self, view: RequestView | None, method: bytes | None = None,
                target: bytes = b"") -> Target | Refusal:
        """Route, shard and hash-key for one request, or a Refusal naming why not: a
        request ``view`` when ``needs_view``, else its ``method`` and ``target`` as
        received; neither for a connection (TCP), which routes do not apply to."""
        routes = self.routes
        if view is None and (method is None or routes is None) \
                and self._default_target is not None:
            return self._default_target
        route: RouteChoice | None = None
        shard: str | None = None
        timeout = self.request_timeout
        if routes is not None and (view is not None or method is not None):
            if view is not None:
                route = routes.choose(view, self.rng)
            else:
                route = routes.choose_raw(method, target, self.rng)  # type: ignore[arg-type]
            if route is None:
                return Refusal(404, "no_route", f"no route of {self.name} matches "
                                                f"{self.request_line(view, method, target)}")
            if route.timeout:
                timeout = route.timeout
        if view is not None and self.partition is not None:
            chosen = self.partition.shard_for(view, self.rng)
            if isinstance(chosen, Refusal):
                return chosen
            shard = chosen
        hash_key = None
        if view is not None and self.settings.hash_on and self.settings.lb in HASH_POLICIES:
            value = view.key(self.settings.hash_on)
            hash_key = value.encode() if value is not None else None
        if hash_key is None:  # the same route and shard give the same target
            cached = self._targets.get((id(route), shard))
            if cached is not None:
                return cached
        key = (route.subset if route else (), shard)
        made = Target(self.balancer(key), timeout, route, hash_key, key)
        if route is None and view is None:
            self._default_target = made
        elif hash_key is None:
            self._targets[(id(route), shard)] = made
        return made

    @staticmethod
    def request_line(view: RequestView | None, method: bytes | None, target: bytes) -> str:
        """The method and path a refusal names."""
        if view is not None:
            return f"{view.method} {view.path}"
        return f"{(method or b'').decode('latin-1')} {raw_path(target).decode('latin-1')}"

    def pick(self, target: Target, exclude: list[EndpointState]) -> EndpointState | None:
        now = self.clock()
        if self.outlier.next_expiry is not None and now >= self.outlier.next_expiry \
                and self.outlier.expire(now):
            self.refresh()
        ctx = self._ctx
        ctx.now = now
        ctx.hash_key = target.hash_key
        return target.balancer.pick(ctx, exclude)

    def untried(self, target: Target, tried: list[EndpointState]) -> bool:
        """Whether a retry would have an endpoint left to go to."""
        # A loop, not any(generator): the compiled build's cpdef methods take no closures.
        for member in self.members.get(target.key, ()):  # noqa: SIM110
            if member not in tried:
                return True
        return False

    def record_outcome(self, state: EndpointState, failed: bool) -> bool:
        """Feed outlier detection; True if this outcome ejected the endpoint."""
        if not failed and not self.outlier.tracking:
            return False  # the common case: nothing to reset, no clock needed
        if self.outlier.record(state.key, failed, self.clock()):
            self.refresh()
            return True
        return False

    def ejected_count(self) -> int:
        return len(self.outlier.ejected())

    def sweep_idle(self, now: float) -> None:
        """Close the connections idle for longer than ``idle_timeout``."""
        for pool in self.pools():
            for conn in pool.expire_idle(now - self.settings.idle_timeout):
                conn.close()

    def close(self) -> None:
        """Close the idle connections; busy ones close when released."""
        for pool in self.pools():
            for conn in pool.close():
                conn.close()

    # -- connection pools -------------------------------------------------------------

    def pools(self) -> list[ConnectionPool]:
        return [self.pool] if self._h2_pool is None else [self.pool, self._h2_pool]

    def h2_pool(self) -> ConnectionPool:
        """The pool of HTTP/2 connections, made at the first call that needs one, with
        the main pool's connection limits (its request and retry breakers stay the
        cluster's: the main pool counts every request)."""
        pool = self._h2_pool
        if pool is None:
            pool = self._h2_pool = pool_module.ConnectionPool()
            s = self.settings
            pool.configure(s.max_connections, s.max_pending_requests, s.max_requests,
                           s.max_retries)
            pool.set_endpoints(self.states)
            pool.resting = self.pool.resting
            pool.closed = self.pool.closed
        return pool


__all__ = ["Cluster", "Hashable", "Refusal", "Target"]

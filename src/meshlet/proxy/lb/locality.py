"""Locality: stay on the caller's node, then its zone, then go anywhere.

Endpoints fall in tiers: same node, same zone, elsewhere. Requests stay in the nearest
tier while it is healthy (at least ``min_healthy`` of its members available) and not
overloaded. When it is not, the next tier joins it, as Envoy's zone-aware routing
spills. Within the chosen endpoints the less loaded of two random ones wins, and that
pair is also the load probe: when even the lighter of the two already has
``max_outstanding`` requests in flight, the tier counts as overloaded for this pick and
the next tier joins. Health is decided once per endpoint set, so a pick costs O(1).

The cluster reports the whole population (available or not) with ``observe_population``
so the policy can tell how much of a tier is down.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Collection, Sequence

from meshlet.proxy.lb.base import EndpointState, PickContext, less_loaded, two_random

DEFAULT_MIN_HEALTHY = 0.7
DEFAULT_MAX_OUTSTANDING = 100


class Locality:
    def __init__(self, zone: str, node: str = "", min_healthy: float = DEFAULT_MIN_HEALTHY,
                 max_outstanding: int = DEFAULT_MAX_OUTSTANDING) -> None:
        self.zone = zone
        self.node = node
        self.min_healthy = min_healthy
        self.max_outstanding = max_outstanding
        self._tiers: list[list[EndpointState]] = [[], [], []]
        self._sets: list[list[EndpointState]] = []
        self._population: Counter[int] = Counter()

    def __repr__(self) -> str:
        return (f"<Locality zone={self.zone!r} node={self.node!r} "
                f"tiers={[len(t) for t in self._tiers]}>")

    def tier(self, e: EndpointState) -> int:
        if self.node and e.endpoint.node == self.node:
            return 0
        if self.zone and e.endpoint.zone == self.zone:
            return 1
        return 2

    def observe_population(self, endpoints: Sequence[EndpointState]) -> None:
        self._population = Counter(self.tier(e) for e in endpoints)

    def reset(self, endpoints: Sequence[EndpointState]) -> None:
        tiers: list[list[EndpointState]] = [[], [], []]
        for e in endpoints:
            if e.weight > 0:
                tiers[self.tier(e)].append(e)
        self._tiers = tiers
        if not self._population:
            self._population = Counter({t: len(m) for t, m in enumerate(tiers)})
        # Candidate sets, nearest first: each healthy tier ends a set; the last set
        # holds everything. A pick starts at the first and widens on overload.
        self._sets = []
        chosen: list[EndpointState] = []
        for t, members in enumerate(tiers):
            chosen = chosen + members
            population = max(self._population.get(t, 0), len(members))
            if members and len(members) >= self.min_healthy * population:
                self._sets.append(chosen)
        if not self._sets or self._sets[-1] is not chosen:
            self._sets.append(chosen)

    def pick(self, ctx: PickContext, exclude: Collection[EndpointState] = ()
             ) -> EndpointState | None:
        best = None
        for candidates in self._sets:
            pair = two_random(candidates, ctx.rng, exclude)
            if pair is None:
                continue
            best = less_loaded(*pair)
            if best.outstanding < self.max_outstanding:
                return best
        return best

"""Locality: stay on the caller's node, then its zone, then go anywhere.

Endpoints fall in tiers: same node, same zone, elsewhere. Requests stay in the nearest
tier while it is healthy (at least ``min_healthy`` of its members available) and not
overloaded (fewer than ``max_outstanding`` requests in flight per endpoint on average).
When it is not, the next tier joins it, as Envoy's zone-aware routing spills. Within
the chosen endpoints the less loaded of two random ones wins.

The cluster reports the whole population (available or not) with ``observe_population``
so the policy can tell how much of a tier is down.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Collection, Sequence

from meshlet.proxy.lb.base import EndpointState, PickContext, two_random

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

    def candidates(self) -> list[EndpointState]:
        chosen: list[EndpointState] = []
        for t, members in enumerate(self._tiers):
            chosen += members
            population = max(self._population.get(t, 0), len(members))
            if not members or not chosen:
                continue
            healthy = len(members) >= self.min_healthy * population
            load = sum(e.outstanding for e in chosen) / len(chosen)
            if healthy and load < self.max_outstanding:
                return chosen
        return chosen

    def pick(self, ctx: PickContext, exclude: Collection[EndpointState] = ()
             ) -> EndpointState | None:
        pair = two_random(self.candidates(), ctx.rng, exclude)
        if pair is None and exclude:
            pair = two_random([e for t in self._tiers for e in t], ctx.rng, exclude)
        if pair is None:
            return None
        a, b = pair
        return a if (a.outstanding + 1) * b.weight <= (b.outstanding + 1) * a.weight else b

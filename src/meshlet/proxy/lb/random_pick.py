"""Random: an endpoint drawn with probability proportional to its weight.

Cumulative weights are computed once per endpoint set, so a pick is one random number
and a binary search; a retry that excludes endpoints falls back to a linear draw.
"""

from __future__ import annotations

import bisect
import itertools
from collections.abc import Collection, Sequence

from meshlet.proxy.lb.base import EndpointState, PickContext, weighted_choice


class Random:
    def __init__(self) -> None:
        self._endpoints: tuple[EndpointState, ...] = ()
        self._cumulative: list[int] = []

    def __repr__(self) -> str:
        return f"<Random n={len(self._endpoints)}>"

    def reset(self, endpoints: Sequence[EndpointState]) -> None:
        self._endpoints = tuple(e for e in endpoints if e.weight > 0)
        self._cumulative = list(itertools.accumulate(e.weight for e in self._endpoints))

    def pick(self, ctx: PickContext, exclude: Collection[EndpointState] = ()
             ) -> EndpointState | None:
        if exclude:
            return weighted_choice(self._endpoints, ctx.rng, exclude)
        if not self._endpoints:
            return None
        point = ctx.rng.random() * self._cumulative[-1]
        return self._endpoints[bisect.bisect_right(self._cumulative, point)]

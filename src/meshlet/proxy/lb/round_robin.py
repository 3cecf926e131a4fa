"""Round robin: each endpoint in turn, exactly evenly over every cycle (weights ignored;
use weighted_round_robin for proportions)."""

from __future__ import annotations

from collections.abc import Collection, Sequence

from meshlet.proxy.lb.base import EndpointState, PickContext


class RoundRobin:
    def __init__(self) -> None:
        self._endpoints: tuple[EndpointState, ...] = ()
        self._next = 0

    def __repr__(self) -> str:
        return f"<RoundRobin n={len(self._endpoints)} next={self._next}>"

    def reset(self, endpoints: Sequence[EndpointState]) -> None:
        new = tuple(endpoints)
        if new != self._endpoints:
            self._endpoints = new
            self._next = self._next % len(new) if new else 0

    def pick(self, ctx: PickContext, exclude: Collection[EndpointState] = ()
             ) -> EndpointState | None:
        endpoints = self._endpoints
        n = len(endpoints)
        for _ in range(n):
            endpoint = endpoints[self._next]
            self._next = (self._next + 1) % n
            if not exclude or endpoint not in exclude:
                return endpoint
        return None

"""Random: an endpoint drawn with probability proportional to its weight."""

from __future__ import annotations

from collections.abc import Collection, Sequence

from meshlet.proxy.lb.base import EndpointState, PickContext, weighted_choice


class Random:
    def __init__(self) -> None:
        self._endpoints: tuple[EndpointState, ...] = ()

    def __repr__(self) -> str:
        return f"<Random n={len(self._endpoints)}>"

    def reset(self, endpoints: Sequence[EndpointState]) -> None:
        self._endpoints = tuple(endpoints)

    def pick(self, ctx: PickContext, exclude: Collection[EndpointState] = ()
             ) -> EndpointState | None:
        return weighted_choice(self._endpoints, ctx.rng, exclude)

"""Least request by the power of two choices: of two random endpoints, the one with
fewer outstanding requests per unit of weight (Mitzenmacher; Envoy, Linkerd)."""

from __future__ import annotations

from collections.abc import Collection, Sequence

from meshlet.proxy.lb.base import EndpointState, PickContext, less_loaded, two_random


class LeastRequest:
    def __init__(self) -> None:
        self._endpoints: tuple[EndpointState, ...] = ()

    def __repr__(self) -> str:
        return f"<LeastRequest n={len(self._endpoints)}>"

    def reset(self, endpoints: Sequence[EndpointState]) -> None:
        self._endpoints = tuple(e for e in endpoints if e.weight > 0)

    def pick(self, ctx: PickContext, exclude: Collection[EndpointState] = ()
             ) -> EndpointState | None:
        pair = two_random(self._endpoints, ctx.rng, exclude)
        if pair is None:
            return None
        return less_loaded(*pair)

"""Peak EWMA: latency-aware balancing, as Finagle and Linkerd do it.

Cost of an endpoint = expected latency (peak-sensitive EWMA, decaying with time) *
(outstanding requests + 1) / weight. Of two random endpoints the cheaper one wins, so
a slow or busy endpoint quickly stops getting traffic, and is probed again once its
estimate has decayed. A new endpoint starts at the mean estimate of the others (or the
default RTT), neither favoured nor shunned.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from typing import TYPE_CHECKING

from meshlet.proxy.lb.base import DEFAULT_DECAY, PickContext, two_random

if TYPE_CHECKING:  # cimported by the compiled build (peak_ewma.pxd)
    from meshlet.proxy.lb.base import EndpointState


class PeakEwma:
    def __init__(self, decay: float = DEFAULT_DECAY) -> None:
        self.decay = decay
        self._endpoints: tuple[EndpointState, ...] = ()

    def __repr__(self) -> str:
        return f"<PeakEwma n={len(self._endpoints)} decay={self.decay}s>"

    def reset(self, endpoints: Sequence[EndpointState]) -> None:
        self._endpoints = tuple(e for e in endpoints if e.weight > 0)

    def cost(self, e: EndpointState, now: float) -> float:
        return e.expected_rtt(now, self.decay) * (e.outstanding + 1) / e.weight

    def pick(self, ctx: PickContext, exclude: Collection[EndpointState] = ()
             ) -> EndpointState | None:
        pair = two_random(self._endpoints, ctx.rng, exclude)
        if pair is None:
            return None
        a, b = pair
        if a is b:
            return a
        return a if self.cost(a, ctx.now) <= self.cost(b, ctx.now) else b

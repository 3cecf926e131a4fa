"""What every policy shares: per-endpoint load state, the pick context, the interface.

``EndpointState`` is owned by the cluster and shared by every balancer that holds the
endpoint (subsets, shards), so outstanding requests and latency are counted once.
The driver calls ``start`` when a request goes to the endpoint and ``finish`` when it
ends; policies only read.
"""

from __future__ import annotations

import math
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

from meshlet.proxy.config import Endpoint

if TYPE_CHECKING:
    import random

DEFAULT_RTT = 0.010  # seconds: the latency assumed for an endpoint never measured
DEFAULT_DECAY = 10.0  # seconds: the EWMA time constant (Finagle and Linkerd use 10 s)


class EndpointState:
    """Load and latency of one endpoint: outstanding requests and a peak-EWMA of RTT."""

    __slots__ = ("endpoint", "key", "outstanding", "rtt", "stamp", "weight")

    def __init__(self, endpoint: Endpoint, rtt: float = DEFAULT_RTT, now: float = 0.0) -> None:
        self.endpoint = endpoint
        self.key = endpoint.key
        self.weight = max(endpoint.weight, 0)
        self.outstanding = 0
        self.rtt = rtt
        self.stamp = now

    def __repr__(self) -> str:
        e = self.endpoint
        return (f"<EndpointState {e.id} {e.address}:{e.port} w={self.weight} "
                f"out={self.outstanding} rtt={self.rtt * 1000:.1f}ms>")

    def start(self) -> None:
        self.outstanding += 1

    def finish(self, rtt: float | None, now: float, decay: float = DEFAULT_DECAY) -> None:
        """One request ended; ``rtt`` is its latency, or None if it measured nothing."""
        self.outstanding -= 1
        if rtt is None:
            return
        if rtt > self.rtt:  # peak-sensitive: a slow response counts in full at once
            self.rtt = rtt
        else:
            w = math.exp(-max(now - self.stamp, 0.0) / decay)
            self.rtt = self.rtt * w + rtt * (1.0 - w)
        self.stamp = now

    def expected_rtt(self, now: float, decay: float = DEFAULT_DECAY) -> float:
        """The EWMA decayed toward zero since the last sample, so an endpoint that
        stopped getting traffic because it was slow is eventually probed again."""
        return self.rtt * math.exp(-max(now - self.stamp, 0.0) / decay)


@dataclass(slots=True)
class PickContext:
    """What a policy may know about the request being balanced."""

    rng: random.Random
    now: float = 0.0
    hash_key: bytes | None = None


class Balancer(Protocol):
    def reset(self, endpoints: Sequence[EndpointState]) -> None:
        """Replace the endpoint set (the same set again changes nothing)."""

    def pick(self, ctx: PickContext, exclude: Collection[EndpointState] = ()
             ) -> EndpointState | None:
        """The endpoint for this request, avoiding ``exclude``; None if none is left."""


def weighted_choice(endpoints: Sequence[EndpointState], rng: random.Random,
                    exclude: Collection[EndpointState] = ()) -> EndpointState | None:
    """A random endpoint with probability proportional to weight, avoiding ``exclude``."""
    candidates = [e for e in endpoints if e not in exclude and e.weight > 0] \
        if exclude else [e for e in endpoints if e.weight > 0]
    if not candidates:
        return None
    total = sum(e.weight for e in candidates)
    point = rng.random() * total
    for e in candidates:
        point -= e.weight
        if point < 0:
            return e
    return candidates[-1]


def less_loaded(a: EndpointState, b: EndpointState) -> EndpointState:
    """The one with fewer outstanding requests per unit of weight (ties: ``a``).
    Compared without dividing: (a.out + 1) / a.w <= (b.out + 1) / b.w."""
    return a if (a.outstanding + 1) * b.weight <= (b.outstanding + 1) * a.weight else b


def two_random(endpoints: Sequence[EndpointState], rng: random.Random,
               exclude: Collection[EndpointState]) -> tuple[EndpointState, EndpointState] | None:
    """Two distinct endpoints drawn uniformly (power of two choices); None if fewer."""
    pool = [e for e in endpoints if e not in exclude] if exclude else endpoints
    n = len(pool)
    if n < 2:
        return (pool[0], pool[0]) if n == 1 else None
    i = rng.randrange(n)
    j = rng.randrange(n - 1)
    if j >= i:
        j += 1
    return pool[i], pool[j]

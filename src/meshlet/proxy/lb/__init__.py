"""Load-balancing policies: pure objects, no I/O, clock or global randomness.

A policy is told the available endpoints with ``reset`` and asked to ``pick`` with a
``PickContext`` (an injected ``random.Random``, the current time, the request's hash
key). It returns None when nothing is left; ``exclude`` lets a retry avoid endpoints
already tried. Load and latency live in ``EndpointState``, shared by all policies.
"""

from __future__ import annotations

from typing import Any

from meshlet.proxy.lb.base import Balancer, EndpointState, PickContext
from meshlet.proxy.lb.least_request import LeastRequest
from meshlet.proxy.lb.locality import Locality
from meshlet.proxy.lb.maglev import Maglev
from meshlet.proxy.lb.peak_ewma import PeakEwma
from meshlet.proxy.lb.random_pick import Random
from meshlet.proxy.lb.ring_hash import RingHash
from meshlet.proxy.lb.round_robin import RoundRobin
from meshlet.proxy.lb.weighted_round_robin import WeightedRoundRobin

POLICY_NAMES = ("round_robin", "weighted_round_robin", "random", "least_request",
                "peak_ewma", "ring_hash", "maglev", "locality")
HASH_POLICIES = frozenset({"ring_hash", "maglev"})


def make_balancer(name: str, settings: dict[str, Any] | None = None, zone: str = "",
                  node: str = "") -> Balancer:
    """A new policy ``name`` configured from validated ``settings``."""
    s = settings or {}
    if name == "round_robin":
        return RoundRobin()
    if name == "weighted_round_robin":
        return WeightedRoundRobin()
    if name == "random":
        return Random()
    if name == "least_request":
        return LeastRequest()
    if name == "peak_ewma":
        return PeakEwma(decay=s.get("ewma_decay", 10.0))
    if name == "ring_hash":
        return RingHash(min_ring_size=s.get("min_ring_size", 1024))
    if name == "maglev":
        return Maglev(table_size=s.get("maglev_table_size", 65537))
    if name == "locality":
        return Locality(zone, node, s.get("locality_min_healthy", 0.7),
                        s.get("locality_max_outstanding", 100))
    raise AssertionError(f"unknown policy {name!r}")


__all__ = ["POLICY_NAMES", "HASH_POLICIES", "Balancer", "EndpointState", "PickContext",
           "LeastRequest", "Locality", "Maglev", "PeakEwma", "Random", "RingHash",
           "RoundRobin", "WeightedRoundRobin", "make_balancer"]

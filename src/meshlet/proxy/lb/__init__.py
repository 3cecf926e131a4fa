"""Load-balancing policies: pure objects, no I/O, clock or global randomness.

A policy is told the endpoint set with ``reset`` and asked to ``pick``; it returns None
when it has nothing to offer. ``exclude`` lets a retry avoid endpoints already tried.
"""

from __future__ import annotations

from meshlet.proxy.lb.base import Balancer
from meshlet.proxy.lb.round_robin import RoundRobin

POLICIES: dict[str, type[Balancer]] = {"round_robin": RoundRobin}


def make_balancer(name: str) -> Balancer:
    return POLICIES[name]()


__all__ = ["Balancer", "RoundRobin", "make_balancer", "POLICIES"]

"""Ring hash: consistent hashing on a ring of virtual nodes (Karger et al.).

Each endpoint owns ``vnodes x weight`` points on a 64-bit ring; a request's key hash
goes to the first point clockwise. Removing one of N endpoints moves only the keys it
owned (about 1/N). While the ring would be smaller than ``min_ring_size`` the points per
weight are scaled up, so small sets still spread evenly; above it, the points of the
other endpoints never change. A request with no key goes to a random endpoint.
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Collection, Sequence

from meshlet.proxy.lb.base import EndpointState, PickContext, weighted_choice
from meshlet.proxy.lb.hashing import hash64

DEFAULT_VNODES = 128
DEFAULT_MIN_RING_SIZE = 1024


class RingHash:
    def __init__(self, min_ring_size: int = DEFAULT_MIN_RING_SIZE,
                 vnodes: int = DEFAULT_VNODES) -> None:
        self.min_ring_size = min_ring_size
        self.vnodes = vnodes
        self._endpoints: tuple[EndpointState, ...] = ()
        self._hashes: list[int] = []
        self._owners: list[EndpointState] = []
        self._points: dict[tuple[str, int], list[int]] = {}  # (id, count) -> hashes

    def __repr__(self) -> str:
        return f"<RingHash n={len(self._endpoints)} ring={len(self._hashes)}>"

    def reset(self, endpoints: Sequence[EndpointState]) -> None:
        new = tuple(e for e in endpoints if e.weight > 0)
        if new == self._endpoints:
            return
        self._endpoints = new
        total = sum(e.weight for e in new)
        per_weight = self.vnodes
        if total and per_weight * total < self.min_ring_size:
            per_weight = math.ceil(self.min_ring_size / total)
        cache: dict[tuple[str, int], list[int]] = {}
        for e in new:  # hash each endpoint's points once, not on every reset
            key = (e.endpoint.id, per_weight * e.weight)
            cache[key] = self._points.get(key) or [
                hash64(f"{key[0]}#{i}".encode()) for i in range(key[1])]
        self._points = cache
        points = sorted((h, n) for n, e in enumerate(new)
                        for h in cache[(e.endpoint.id, per_weight * e.weight)])
        self._hashes = [h for h, _ in points]
        self._owners = [new[n] for _, n in points]

    def pick(self, ctx: PickContext, exclude: Collection[EndpointState] = ()
             ) -> EndpointState | None:
        if ctx.hash_key is None or not self._hashes:
            return weighted_choice(self._endpoints, ctx.rng, exclude)
        i = bisect.bisect_left(self._hashes, hash64(ctx.hash_key))
        size = len(self._hashes)
        owners = self._owners
        if not exclude:
            return owners[i % size]
        for step in range(size):  # walk on to the next endpoint not yet tried
            owner = owners[(i + step) % size]
            if owner not in exclude:
                return owner
        return None

"""Round robin: each endpoint in turn, exactly evenly over every cycle."""

from __future__ import annotations

from collections.abc import Collection, Sequence

from meshlet.proxy.config import Endpoint


class RoundRobin:
    def __init__(self) -> None:
        self._endpoints: tuple[Endpoint, ...] = ()
        self._next = 0

    def __repr__(self) -> str:
        return f"<RoundRobin n={len(self._endpoints)} next={self._next}>"

    def reset(self, endpoints: Sequence[Endpoint]) -> None:
        new = tuple(endpoints)
        if new != self._endpoints:
            self._endpoints = new
            self._next = self._next % len(new) if new else 0

    def pick(self, exclude: Collection[Endpoint] = ()) -> Endpoint | None:
        endpoints = self._endpoints
        n = len(endpoints)
        for _ in range(n):
            endpoint = endpoints[self._next]
            self._next = (self._next + 1) % n
            if endpoint not in exclude:
                return endpoint
        return None

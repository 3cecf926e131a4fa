"""The balancer interface every policy implements."""

from __future__ import annotations

from collections.abc import Collection, Sequence
from typing import Protocol

from meshlet.proxy.config import Endpoint


class Balancer(Protocol):
    def reset(self, endpoints: Sequence[Endpoint]) -> None:
        """Replace the endpoint set (idempotent: the same set twice changes nothing)."""

    def pick(self, exclude: Collection[Endpoint] = ()) -> Endpoint | None:
        """The endpoint for the next request, avoiding ``exclude`` when possible."""

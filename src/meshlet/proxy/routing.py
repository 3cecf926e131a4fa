"""Route matching and traffic splitting for one upstream service. Pure.

Routes are tried in order; the first whose path prefix, headers and methods all match
wins. Its split picks a subset of instances (by metadata, e.g. version=v2) in proportion
to the weights. No routes means every request goes to the whole service; routes that
all miss mean ``no_route``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from meshlet.proxy.request_view import RequestView

if TYPE_CHECKING:
    import random

from meshlet.state.config_entry import Route

Subset = tuple[tuple[str, str], ...]


@dataclass(frozen=True)
class RouteChoice:
    subset: Subset
    timeout: float | None
    set_headers: tuple[tuple[bytes, bytes], ...]
    remove_headers: frozenset[bytes]


def subset_key(labels: dict[str, str]) -> Subset:
    return tuple(sorted(labels.items()))


class RouteTable:
    def __init__(self, routes: list[Route]) -> None:
        self.routes = routes

    def __repr__(self) -> str:
        return f"<RouteTable routes={len(self.routes)}>"

    @staticmethod
    def matches(route: Route, view: RequestView) -> bool:
        m = route.match
        if not view.path.startswith(m.path_prefix):
            return False
        if m.methods and view.method not in m.methods:
            return False
        return all(view.headers.get(name.lower()) == value for name, value in m.headers.items())

    def choose(self, view: RequestView, rng: random.Random) -> RouteChoice | None:
        for route in self.routes:
            if not self.matches(route, view):
                continue
            subset: Subset = ()
            if route.split:
                total = sum(t.weight for t in route.split)
                point = rng.random() * total
                for target in route.split:
                    point -= target.weight
                    if point < 0:
                        subset = subset_key(target.subset)
                        break
            rewrite = route.request_headers
            return RouteChoice(
                subset, route.timeout,
                tuple((k.lower().encode(), v.encode()) for k, v in rewrite.set.items()),
                frozenset(k.lower().encode() for k in [*rewrite.remove, *rewrite.set]))
        return None

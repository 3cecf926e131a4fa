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
from meshlet.settings_rules import header_bytes

if TYPE_CHECKING:
    import random

from meshlet.proxy.settings import Route

Subset = tuple[tuple[str, str], ...]


@dataclass(frozen=True)
class RouteChoice:
    subset: Subset
    timeout: float | None
    set_headers: tuple[tuple[bytes, bytes], ...]
    remove_headers: frozenset[bytes]


@dataclass(frozen=True, slots=True)
class CompiledRoute:
    """A route's match conditions, ready to compare (header names lower-cased)."""

    path_prefix: str
    methods: frozenset[str]
    headers: tuple[tuple[str, str], ...]
    cumulative: list[float]
    choices: list[RouteChoice]


def subset_key(labels: dict[str, str]) -> Subset:
    return tuple(sorted(labels.items()))


class RouteTable:
    """Routes compiled once per config: each request only compares and draws."""

    def __init__(self, routes: list[Route]) -> None:
        self.routes = routes
        self._compiled = [self._compile(r) for r in routes]

    def __repr__(self) -> str:
        return f"<RouteTable routes={len(self.routes)}>"

    @staticmethod
    def _compile(route: Route) -> CompiledRoute:
        rewrite = route.request_headers
        # In the charset the rules checked them against (settings_rules.header_value).
        set_headers = tuple((header_bytes(k.lower()), header_bytes(v))
                            for k, v in rewrite.set.items())
        removed = frozenset(header_bytes(k.lower()) for k in [*rewrite.remove, *rewrite.set])
        subsets = [subset_key(t.subset) for t in route.split] or [()]
        choices = [RouteChoice(subset, route.timeout, set_headers, removed)
                   for subset in subsets]
        cumulative: list[float] = []
        total = 0.0
        for t in route.split:
            total += t.weight
            cumulative.append(total)
        m = route.match
        headers = tuple((name.lower(), value) for name, value in m.headers.items())
        return CompiledRoute(m.path_prefix, frozenset(m.methods), headers, cumulative,
                             choices)

    @staticmethod
    def matches(route: CompiledRoute, view: RequestView, path: str) -> bool:
        if not path.startswith(route.path_prefix):
            return False
        if route.methods and view.method not in route.methods:
            return False
        if route.headers:
            headers = view.headers
            return all(headers.get(name) == value for name, value in route.headers)
        return True

    def choose(self, view: RequestView, rng: random.Random) -> RouteChoice | None:
        path = view.path
        for route in self._compiled:
            if not self.matches(route, view, path):
                continue
            choices = route.choices
            if len(choices) == 1:
                return choices[0]
            cumulative = route.cumulative
            point = rng.random() * cumulative[-1]
            for i, bound in enumerate(cumulative):
                if point < bound:
                    return choices[i]
            return choices[-1]
        return None

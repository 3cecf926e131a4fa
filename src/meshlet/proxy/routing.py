"""Route matching and traffic splitting for one upstream service. Pure.

Routes are tried in order; the first whose path prefix, headers and methods all match
wins. Its split picks a subset of instances (by metadata, e.g. version=v2) in proportion
to the weights. No routes means every request goes to the whole service; routes that
all miss mean ``no_route``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from meshlet.proxy.request_view import RequestView
from meshlet.settings_rules import header_bytes

if TYPE_CHECKING:
    import random

from meshlet.proxy.settings import Route

Subset = tuple[tuple[str, str], ...]
QUESTION, COLON, SLASH = 63, 58, 47


@dataclass(frozen=True)
class RouteChoice:
    subset: Subset
    timeout: float | None
    set_headers: tuple[tuple[bytes, bytes], ...]
    remove_headers: frozenset[bytes]
    # The set headers as lines of a head, and the lengths of the names removed (a
    # header of another length is kept without lower-casing its name).
    set_lines: bytes = b""
    removed_lengths: frozenset[int] = frozenset()


@dataclass(frozen=True, slots=True)
class CompiledRoute:
    """A route's match conditions, ready to compare (header names lower-cased), and
    its prefix and methods as the bytes of a request line (None: a prefix no
    request's target can start with)."""

    path_prefix: str
    methods: frozenset[str]
    headers: tuple[tuple[str, str], ...]
    cumulative: list[float]
    choices: list[RouteChoice]
    raw_prefix: bytes | None
    raw_methods: frozenset[bytes]


def subset_key(labels: dict[str, str]) -> Subset:
    return tuple(sorted(labels.items()))


def raw_path(target: bytes) -> bytes:
    """A request target's path, as ``RequestView.path`` reads it, in bytes: up to its
    query, or as urlsplit reads it for a target with ``://`` in it."""
    p = target  # compiled: a pointer to the bytes (routing.pxd)
    n = len(target)
    query = -1
    absolute = False
    for i in range(n):
        if p[i] == QUESTION and query < 0:
            query = i
        elif p[i] == COLON and i + 2 < n and p[i + 1] == SLASH and p[i + 2] == SLASH:
            absolute = True
    if absolute:
        try:
            return urlsplit(target.decode("latin-1")).path.encode("latin-1")
        except ValueError:  # not a URL urlsplit can read (``//[a://``)
            pass
    return target if query < 0 else target[:query]


def latin1(text: str) -> bytes | None:
    """``text`` as the bytes it is decoded from in a request view, if it can be."""
    try:
        return text.encode("latin-1")
    except UnicodeEncodeError:
        return None


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
        set_lines = b"".join(b"%b: %b\r\n" % pair for pair in set_headers)
        lengths = frozenset(len(name) for name in removed)
        choices = [RouteChoice(subset, route.timeout, set_headers, removed, set_lines, lengths)
                   for subset in subsets]
        cumulative: list[float] = []
        total = 0.0
        for t in route.split:
            total += t.weight
            cumulative.append(total)
        m = route.match
        headers = tuple((name.lower(), value) for name, value in m.headers.items())
        methods = frozenset(m.methods)
        raw_methods = frozenset(raw for raw in map(latin1, methods) if raw is not None)
        return CompiledRoute(m.path_prefix, methods, headers, cumulative, choices,
                             latin1(m.path_prefix), raw_methods)

    @property
    def needs_headers(self) -> bool:
        """Whether a route matches on headers: the request needs a view to be routed."""
        return any(route.headers for route in self._compiled)

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
            if self.matches(route, view, path):
                return split(route, rng)
        return None

    def choose_raw(self, method: bytes, target: bytes, rng: random.Random
                   ) -> RouteChoice | None:
        """``choose`` for a request's method and target as received, when no route
        matches on headers (``needs_headers``): no view is made."""
        path = raw_path(target)
        for route in self._compiled:
            prefix = route.raw_prefix
            if prefix is not None and path.startswith(prefix) \
                    and (not route.methods or method in route.raw_methods):
                return split(route, rng)
        return None


def split(route: CompiledRoute, rng: random.Random) -> RouteChoice:
    """The route's choice a request goes to, drawn by the split's weights."""
    choices = route.choices
    if len(choices) == 1:
        return choices[0]
    cumulative = route.cumulative
    point = rng.random() * cumulative[-1]
    for i, bound in enumerate(cumulative):
        if point < bound:
            return choices[i]
    return choices[-1]

"""Smooth weighted round robin, as nginx does it, with no needless repeats.

nginx's rule: each pick adds every endpoint's weight to its running score, takes the
highest, and takes the total weight off the winner. Over every cycle of
sum(weights)/gcd(weights) picks each endpoint is chosen exactly in proportion, spread
out rather than in bursts. The rule alone still picks the same endpoint twice in a row
about one time in ten even when the weights leave room to alternate ([9, 7, 2, 2], say).

So the cycle is built once per endpoint set with the same scores, but each pick takes
the highest-scoring endpoint that still has picks left in the cycle, is not the one
just picked, and leaves the rest of the cycle arrangeable without repeats (cyclically,
so the cycle can follow itself). The counts are exact by construction. When one weight
is more than half the total, repeats cannot be avoided and the plain nginx order is
used. Cycles too long to build quickly (``MAX_CYCLE`` picks, or ``MAX_BUILD_STEPS``
cycle length x endpoints: a thousand endpoints of weight one, say) are served by the
earliest-deadline-first stream instead: endpoint i is due at (k + 1/2) x total / w_i
for its k-th pick, kept in a heap, so a pick costs O(log n) however many endpoints
there are. That is just as smooth and exact to within one pick per endpoint per cycle.
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Collection, Sequence

from meshlet.proxy.lb.base import EndpointState, PickContext

MAX_CYCLE = 4096
MAX_BUILD_STEPS = 200_000  # cycle length x endpoints: above it, building would stall


def smooth_sequence(weights: Sequence[int], length: int) -> list[int]:
    """``length`` picks of nginx's smooth weighted round robin (indexes)."""
    scores = [0] * len(weights)
    total = sum(weights)
    out = []
    for _ in range(length):
        best = 0
        for i, w in enumerate(weights):
            scores[i] += w
            if scores[i] > scores[best]:
                best = i
        scores[best] -= total
        out.append(best)
    return out


def _room(slots: int, after_last: bool, before_first: bool) -> int:
    """Most picks of one endpoint that fit in ``slots`` positions with no two adjacent,
    when the position before them (``after_last``) and/or after them (``before_first``)
    already holds that endpoint."""
    usable = slots - after_last - before_first
    return (usable + 1) // 2 if usable > 0 else 0


def smooth_cycle(weights: Sequence[int]) -> list[int]:
    """One cycle of smooth weighted round robin with no cyclic repeats (see above)."""
    g = math.gcd(*weights)
    left = [w // g for w in weights]
    length = sum(left)
    if max(left) * 2 > length or len(weights) < 2:
        return smooth_sequence(weights, length)
    total = sum(weights)
    scores = [0] * len(weights)
    seq: list[int] = []
    last = first = -1
    for step in range(length):
        for i, w in enumerate(weights):
            scores[i] += w
        slots = length - step - 1
        top = sorted(range(len(left)), key=lambda k: -left[k])[:3]
        chosen = -1
        for i in sorted(range(len(weights)), key=lambda k: -scores[k]):
            if left[i] == 0 or i == last:
                continue
            head = first if first >= 0 else i
            if slots == 0 and i == head and step > 0:
                continue
            fits = left[i] - 1 <= _room(slots, True, i == head)
            for j in top:  # the fullest others are the only ones that could overflow
                if j != i and left[j] > _room(slots, False, j == head):
                    fits = False
            if fits:
                chosen = i
                break
        if chosen < 0:  # cannot happen when the weights allow; keep exact counts anyway
            chosen = max((k for k in range(len(left)) if left[k]), key=lambda k: scores[k])
        left[chosen] -= 1
        scores[chosen] -= total
        seq.append(chosen)
        last = chosen
        if first < 0:
            first = chosen
    return seq

class WeightedRoundRobin:
    def __init__(self) -> None:
        self._endpoints: tuple[EndpointState, ...] = ()
        self._cycle: list[int] = []
        self._position = 0
        self._due: list[tuple[float, int]] = []  # (deadline, index): the large-set stream
        self._total = 0

    def __repr__(self) -> str:
        return (f"<WeightedRoundRobin n={len(self._endpoints)} cycle={len(self._cycle)} "
                f"at={self._position}>")

    def reset(self, endpoints: Sequence[EndpointState]) -> None:
        new = tuple(e for e in endpoints if e.weight > 0)
        if new == self._endpoints:
            return
        self._endpoints = new
        self._position = 0
        weights = [e.weight for e in new]
        total = self._total = sum(weights)
        self._due = [(0.5 * total / w, i) for i, w in enumerate(weights)]
        heapq.heapify(self._due)
        if not weights:
            self._cycle = []
            return
        length = sum(weights) // math.gcd(*weights)
        small = length <= MAX_CYCLE and length * len(weights) <= MAX_BUILD_STEPS
        self._cycle = smooth_cycle(weights) if small else []

    def _next_index(self) -> int:
        if self._cycle:
            index = self._cycle[self._position]
            self._position = (self._position + 1) % len(self._cycle)
            return index
        due, index = self._due[0]
        heapq.heapreplace(self._due, (due + self._total / self._endpoints[index].weight, index))
        return index

    def pick(self, ctx: PickContext, exclude: Collection[EndpointState] = ()
             ) -> EndpointState | None:
        endpoints = self._endpoints
        if not endpoints:
            return None
        if not exclude:
            return endpoints[self._next_index()]
        if all(e in exclude for e in endpoints):
            return None
        while True:
            chosen = endpoints[self._next_index()]
            if chosen not in exclude:
                return chosen

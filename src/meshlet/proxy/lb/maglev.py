"""Maglev: consistent hashing through a lookup table (Eisenbud et al., NSDI 2016).

Every endpoint has a permutation of the table's slots (from two hashes of its id);
endpoints take turns claiming their next free slot until the table is full, each
claiming in proportion to its weight. Lookup is one index: ``table[hash % size]``.
The table size must be prime and much larger than the number of endpoints.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence

from meshlet.proxy.lb.base import EndpointState, PickContext, weighted_choice
from meshlet.proxy.lb.hashing import hash64

DEFAULT_TABLE_SIZE = 65537


def is_prime(n: int) -> bool:
    if n < 2:
        return False
    i = 2
    while i * i <= n:
        if n % i == 0:
            return False
        i += 1
    return True


def build_table(names: Sequence[str], weights: Sequence[int], size: int) -> list[int]:
    """Slot → index into ``names``. Pure and deterministic."""
    n = len(names)
    offsets = [hash64(b"offset:" + name.encode()) % size for name in names]
    skips = [hash64(b"skip:" + name.encode()) % (size - 1) + 1 for name in names]
    nexts = [0] * n
    table = [-1] * size
    top = max(weights)
    credit = [0.0] * n
    filled = 0
    while True:
        for i in range(n):
            credit[i] += weights[i] / top
            while credit[i] >= 1.0:
                credit[i] -= 1.0
                slot = (offsets[i] + nexts[i] * skips[i]) % size
                while table[slot] >= 0:
                    nexts[i] += 1
                    slot = (offsets[i] + nexts[i] * skips[i]) % size
                table[slot] = i
                nexts[i] += 1
                filled += 1
                if filled == size:
                    return table


class Maglev:
    def __init__(self, table_size: int = DEFAULT_TABLE_SIZE) -> None:
        assert is_prime(table_size), f"maglev table size {table_size} is not prime"
        self.table_size = table_size
        self._endpoints: tuple[EndpointState, ...] = ()
        self._table: list[EndpointState] = []

    def __repr__(self) -> str:
        return f"<Maglev n={len(self._endpoints)} table={self.table_size}>"

    def reset(self, endpoints: Sequence[EndpointState]) -> None:
        new = tuple(e for e in endpoints if e.weight > 0)
        if new == self._endpoints:
            return
        self._endpoints = new
        if not new:
            self._table = []
            return
        slots = build_table([e.endpoint.id for e in new], [e.weight for e in new],
                            self.table_size)
        self._table = [new[i] for i in slots]

    def pick(self, ctx: PickContext, exclude: Collection[EndpointState] = ()
             ) -> EndpointState | None:
        if ctx.hash_key is None or not self._table:
            return weighted_choice(self._endpoints, ctx.rng, exclude)
        chosen = self._table[hash64(ctx.hash_key) % self.table_size]
        if exclude and chosen in exclude:
            return weighted_choice(self._endpoints, ctx.rng, exclude)
        return chosen

"""Sharded routing: which shard a request belongs to, by hash, key range or at random.

Pure: given the request view and an injected rng, ``shard_for`` returns the shard name
or a ``Refusal`` that names the rule, for a clear 4xx.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass
from typing import TYPE_CHECKING

from meshlet.proxy.lb.hashing import hash64, jump_hash
from meshlet.proxy.request_view import RequestView

if TYPE_CHECKING:
    import random

from meshlet.proxy.settings import Partition, at_least, at_most


@dataclass(frozen=True)
class Refusal:
    status: int
    reason: str
    message: str


class PartitionRule:
    def __init__(self, service: str, spec: Partition) -> None:
        self.service = service
        self.spec = spec
        self.names = spec.shard_names()
        self.lows: list[str | float] = []
        self.highs: list[str | float] = []
        self.range_shards: list[str] = []
        for r in spec.ranges:
            self.lows.append(float(r.from_) if spec.numeric else str(r.from_))
            self.highs.append(float(r.to) if spec.numeric else str(r.to))
            self.range_shards.append(r.shard)

    def __repr__(self) -> str:
        return f"<PartitionRule {self.describe()}>"

    def describe(self) -> str:
        return f"{self.spec.strategy} partition of {self.service} on {self.spec.key}"

    def shards(self) -> list[str]:
        names = list(self.names or dict.fromkeys(self.range_shards))
        if self.spec.default_shard and self.spec.default_shard not in names:
            names.append(self.spec.default_shard)
        return names

    def shard_for(self, view: RequestView, rng: random.Random) -> str | Refusal:
        spec = self.spec
        if spec.strategy == "random":
            return rng.choice(self.names)
        key = view.key(spec.key)
        if key is None:
            return spec.default_shard or Refusal(
                400, "partition_key_missing",
                f"request has no {spec.key}, which the {self.describe()} needs")
        if spec.strategy == "hash":
            h = hash64(key.encode())
            index = jump_hash(h, len(self.names)) if spec.hash == "consistent" \
                else h % len(self.names)
            return self.names[index]
        shard = self.range_lookup(key)
        if shard is not None:
            return shard
        return spec.default_shard or Refusal(
            400, "partition_no_match",
            f"{spec.key}={key!r} is in no range of the {self.describe()}")

    def range_lookup(self, key: str) -> str | None:
        if self.spec.numeric:
            try:
                value: str | float = float(key)
            except ValueError:
                return None
        else:
            value = key
        i = bisect.bisect_right(self.lows, value) - 1
        if i < 0 or not at_least(value, self.lows[i]):
            return None
        return self.range_shards[i] if at_most(value, self.highs[i]) else None

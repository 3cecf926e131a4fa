"""Rules on per-service settings that need no schema library.

Shared by the control plane's pydantic model (``state/config_entry.py``) and the
sidecar's light reader (``proxy/settings.py``), so both accept the same key sources,
status lists and shard ranges. Each check raises ValueError with a message that names
the offending part; callers add the field path. Pure: no I/O.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any, Protocol

LB_POLICIES = ("round_robin", "weighted_round_robin", "random", "least_request",
               "peak_ewma", "ring_hash", "maglev", "locality")
# A model-level rule's message that names its field: "routes.0.split: must ...".
FIELD_PREFIX = re.compile(r"^([a-z_]+(?:\.[a-z0-9_]+)*): (.*)$", re.S)
KEY_SOURCE = re.compile(r"^(header|cookie|query):[A-Za-z0-9_.\-]+$|^path:\d+$|^source_ip$")
KEY_SOURCE_HINT = "expected header:NAME, cookie:NAME, query:NAME, path:N or source_ip"


class RangeLike(Protocol):
    @property
    def from_(self) -> str | float: ...
    @property
    def to(self) -> str | float: ...


def key_source(value: Any) -> str:
    if not isinstance(value, str) or not KEY_SOURCE.match(value):
        raise ValueError(KEY_SOURCE_HINT)
    return value


def is_prime(n: int) -> bool:
    return n >= 2 and all(n % i for i in range(2, int(n ** 0.5) + 1))


def status_list(value: Any) -> Any:
    """``"502,503"`` (as the CLI sends it) or a single code, as a list; others as given."""
    if isinstance(value, str):
        try:
            return [int(v) for v in value.split(",") if v.strip()]
        except ValueError:
            raise ValueError("expected status codes such as 502,503") from None
    if isinstance(value, int) and not isinstance(value, bool):
        return [value]
    return value


def range_bound(value: str | float, numeric: bool, where: str) -> str | float:
    if numeric:
        try:
            return float(value)
        except (TypeError, ValueError):
            raise ValueError(f"{where}: {value!r} is not a number") from None
    if not isinstance(value, str) or value == "":
        raise ValueError(f"{where}: expected a non-empty string")
    return value


def at_most(value: str | float, high: str | float) -> bool:
    """``value <= high``, where a string bound also covers keys that start with it."""
    if isinstance(value, str) and isinstance(high, str):
        return value[:len(high)] <= high
    return float(value) <= float(high)


def at_least(value: str | float, low: str | float) -> bool:
    if isinstance(value, str) and isinstance(low, str):
        return value >= low
    return float(value) >= float(low)


def check_ranges(ranges: Sequence[RangeLike], numeric: bool) -> None:
    """Ranges must be non-empty, ordered and non-overlapping."""
    if not ranges:
        raise ValueError("strategy range needs at least one range")
    previous_to: str | float | None = None
    for i, r in enumerate(ranges):
        low = range_bound(r.from_, numeric, f"ranges.{i}.from")
        high = range_bound(r.to, numeric, f"ranges.{i}.to")
        if not at_most(low, high):
            raise ValueError(f"ranges.{i}: empty range, from {r.from_!r} is after to {r.to!r}")
        if previous_to is not None and at_most(low, previous_to):
            raise ValueError(f"ranges.{i}: from {r.from_!r} overlaps or comes before the "
                             f"previous range's end {previous_to!r}; ranges must be "
                             "ordered and must not overlap")
        previous_to = high


def check_retry_on(codes: Sequence[int]) -> None:
    for code in codes:
        if not 500 <= code <= 599 and code != 429:
            raise ValueError(f"retry_on: {code} is not a 5xx status or 429")


def check_maglev_size(size: int) -> None:
    if not is_prime(size):
        raise ValueError(f"maglev_table_size: {size} is not prime "
                         "(try 65537, 131071 or 4099)")


def check_backoff(backoff: float, backoff_max: float) -> None:
    if backoff_max < backoff:
        raise ValueError("retry_backoff_max must be at least retry_backoff")


def check_split(weights: Sequence[int], path_prefix: str) -> None:
    if weights and sum(weights) == 0:
        raise ValueError("split weights must not all be zero")
    if not path_prefix.startswith("/"):
        raise ValueError("match.path_prefix must start with '/'")


def shard_names(shards: int | Sequence[str] | None) -> list[str]:
    if isinstance(shards, int):
        return [str(i) for i in range(shards)]
    return list(shards or [])


def check_partition(strategy: str, shards: int | Sequence[str] | None,
                    ranges: Sequence[RangeLike], numeric: bool) -> None:
    if strategy in ("hash", "random"):
        names = shard_names(shards)
        if shards is None or names == []:
            raise ValueError(f"strategy {strategy} needs shards (a count or a list of names)")
        if isinstance(shards, int) and not 1 <= shards <= 4096:
            raise ValueError("shards must be between 1 and 4096")
        if len(set(names)) != len(names):
            raise ValueError("shard names must be unique")
    if strategy == "range":
        check_ranges(ranges, numeric)

"""Rules on per-service settings that need no schema library.

Shared by the control plane's pydantic model (``state/config_entry.py``) and the
sidecar's light reader (``proxy/settings.py``), so both accept the same key sources,
status lists, shard ranges, header names and values and bounds. Each check raises
ValueError with a message that names the offending part; callers add the field path.
Pure: no I/O.

Every number has an upper bound and must be finite: a setting of ``1e400`` (infinity
once parsed) or NaN would otherwise be stored, then break every push to a sidecar.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Sequence, Sized
from typing import Any, Protocol, TypeVar

# The gRPC statuses ``retry_on`` may name, by Envoy's names for them, with their codes.
GRPC_RETRYABLE = {"cancelled": 1, "deadline-exceeded": 4, "internal": 13,
                  "resource-exhausted": 8, "unavailable": 14}

# What a service speaks: HTTP/1.1 (the sidecar takes HTTP/2 from callers too), HTTP/2
# to its endpoints (``http2``; ``grpc`` is that, for gRPC), or bytes (``tcp``).
PROTOCOLS = ("http", "http2", "grpc", "tcp")
LB_POLICIES = ("round_robin", "weighted_round_robin", "random", "least_request",
               "peak_ewma", "ring_hash", "maglev", "locality")
# A model-level rule's message that names its field: "routes.0.split: must ...".
FIELD_PREFIX = re.compile(r"^([a-z_]+(?:\.[a-z0-9_]+)*): (.*)$", re.S)
KEY_SOURCE = re.compile(r"(header|cookie|query):[A-Za-z0-9_.\-]+|path:\d+|source_ip")
KEY_SOURCE_HINT = "expected header:NAME, cookie:NAME, query:NAME, path:N or source_ip"

# Upper bounds (the lower ones are declared with each field).
MAX_DURATION = 24 * 3600.0   # seconds: no timeout, backoff or ejection longer than a day
MAX_COUNT = 1_000_000        # connections, requests, failures, burst, ring and ring-like sizes
MAX_RATE = 1_000_000.0       # per second
MAX_ROUTES = 256
MAX_SPLITS = 64              # targets of one route's split
MAX_HEADERS = 64             # entries of one header map or list, or of a subset
MAX_METHODS = 16
MAX_STATUSES = 101           # 429 and 500..599
MAX_RANGES = 4096            # as many as shards
MAX_SHARDS = 4096
MAX_HEADER_NAME = 256        # bytes on the wire (HEADER_CHARSET)
MAX_HEADER_VALUE = 8192
# RFC 9110 5.6.2: a field name, like a method, is a token of these characters.
TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")  # used with fullmatch: no "\n" at the end
TOKEN_HINT = "letters, digits and !#$%&'*+-.^_`|~"
# A field value may hold visible characters, spaces and tabs (RFC 9110 5.5); CR, LF and
# NUL above all must never reach a request the sidecar writes.
CONTROL = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")
# The sidecar writes header names and values in Latin-1, the charset it reads request
# heads in (proxy/request_view.py): a configured value then matches the bytes a client
# sends. A value holds visible ASCII, space, tab and RFC 9110's obs-text (0x80-0xFF)
# without the C1 controls (0x80-0x9F): visible Latin-1. Anything else (a lone UTF-16
# surrogate, a character beyond U+00FF) has no bytes to write and is refused.
HEADER_CHARSET = "latin-1"
FIELD_VALUE = re.compile(r"[\t\x20-\x7e\xa0-\xff]*")


S = TypeVar("S", bound=Sized)


class RangeLike(Protocol):
    @property
    def from_(self) -> str | float: ...
    @property
    def to(self) -> str | float: ...


def key_source(value: Any) -> str:
    if not isinstance(value, str) or not KEY_SOURCE.fullmatch(value):
        raise ValueError(KEY_SOURCE_HINT)
    return value


def shown(text: str, limit: int = 64) -> str:
    """``text`` quoted for a message, cut short if long."""
    return repr(text) if len(text) <= limit else f"{text[:limit]!r}..."


def header_bytes(text: str) -> bytes:
    """A header name or value as the sidecar writes it; only for text that passed
    ``header_name`` or ``header_value`` (others raise UnicodeEncodeError)."""
    return text.encode(HEADER_CHARSET)


def header_name(name: str) -> None:
    """An HTTP token (ASCII, so its characters are its bytes) of at most MAX_HEADER_NAME."""
    if not TOKEN.fullmatch(name):
        raise ValueError(f"{shown(name)} is not a header name: an HTTP token ({TOKEN_HINT})")
    if len(header_bytes(name)) > MAX_HEADER_NAME:
        raise ValueError(f"header name {shown(name)} is longer than {MAX_HEADER_NAME} "
                         "bytes")


def header_value(name: str, value: str) -> None:
    """Visible Latin-1, spaces and tabs (see FIELD_VALUE), at most MAX_HEADER_VALUE bytes."""
    if CONTROL.search(value):
        raise ValueError(f"header {shown(name)}: the value holds CR, LF, NUL or another "
                         "control character")
    if not FIELD_VALUE.fullmatch(value):
        bad = next(c for c in value if not FIELD_VALUE.fullmatch(c))
        raise ValueError(f"header {shown(name)}: the value holds {bad!r} (U+{ord(bad):04X}); "
                         "a header value may hold visible Latin-1 characters (up to U+00FF, "
                         "no control characters), spaces and tabs")
    if len(header_bytes(value)) > MAX_HEADER_VALUE:
        raise ValueError(f"header {shown(name)}: the value is longer than {MAX_HEADER_VALUE} "
                         "bytes")


def limited(limit: int, what: str) -> Callable[[S], S]:
    """A rule: at most ``limit`` items (``what`` names them in the message)."""
    def check(items: S) -> S:
        if len(items) > limit:
            raise ValueError(f"at most {limit} {what}, not {len(items)}")
        return items
    return check


def header_map(headers: dict[str, str]) -> dict[str, str]:
    """Header names that are HTTP tokens, values of visible Latin-1 (no CR, LF or NUL)."""
    limited(MAX_HEADERS, "headers")(headers)
    for name, value in headers.items():
        header_name(name)
        header_value(name, value)
    return headers


def header_names(names: list[str]) -> list[str]:
    limited(MAX_HEADERS, "headers")(names)
    for name in names:
        header_name(name)
    return names


def method_names(methods: list[str]) -> list[str]:
    limited(MAX_METHODS, "methods")(methods)
    for method in methods:
        if len(method) > 32 or not TOKEN.fullmatch(method):
            raise ValueError(f"{shown(method)} is not an HTTP method (a token of {TOKEN_HINT})")
    return methods


def is_prime(n: int) -> bool:
    return n >= 2 and all(n % i for i in range(2, int(n ** 0.5) + 1))


def status_list(value: Any) -> Any:
    """``"502,503,unavailable"`` (as the CLI sends it) or a single code, as a list of
    HTTP statuses (ints) and gRPC status names; others as given."""
    if isinstance(value, str):
        return [_status_item(v) for v in value.split(",") if v.strip()]
    if isinstance(value, int) and not isinstance(value, bool):
        return [value]
    if isinstance(value, (list, tuple)):
        return [_status_item(v) if isinstance(v, str) else v for v in value]
    return value


def _status_item(text: str) -> int | str:
    text = text.strip()
    return int(text) if text.isdigit() else text.lower()


def finite_bound(value: Any) -> Any:
    """A value as given, unless it is a number that is not finite (or beyond a float's
    range), which a union of types would report against each of its members."""
    if isinstance(value, int) and not isinstance(value, bool) and abs(value) >= 1e300:
        raise ValueError("Input should be a finite number")
    if isinstance(value, float) and not math.isfinite(value):
        raise ValueError("Input should be a finite number")
    return value


def range_bound(value: str | float, numeric: bool, where: str) -> str | float:
    if numeric:
        try:
            number = float(value)
        except (TypeError, ValueError, OverflowError):
            raise ValueError(f"{where}: {value!r} is not a number") from None
        if not math.isfinite(number):
            raise ValueError(f"{where}: {value!r} is not a finite number")
        return number
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


def check_retry_on(codes: Sequence[int | str]) -> None:
    for code in codes:
        if isinstance(code, str):
            if code not in GRPC_RETRYABLE:
                raise ValueError(f"retry_on: {code!r} is not a gRPC status a retry may name "
                                 f"({', '.join(GRPC_RETRYABLE)})")
        elif not 500 <= code <= 599 and code != 429:
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
        if shards is None or shards == []:
            raise ValueError(f"strategy {strategy} needs shards (a count or a list of names)")
        # Bounded before the names are made: a count of 10**9 would make 10**9 of them.
        if isinstance(shards, int) and not 1 <= shards <= MAX_SHARDS:
            raise ValueError(f"shards must be between 1 and {MAX_SHARDS}")
        if not isinstance(shards, int) and len(shards) > MAX_SHARDS:
            raise ValueError(f"at most {MAX_SHARDS} shard names")
        names = shard_names(shards)
        if len(set(names)) != len(names):
            raise ValueError("shard names must be unique")
    if strategy == "range":
        if len(ranges) > MAX_RANGES:
            raise ValueError(f"at most {MAX_RANGES} ranges")
        check_ranges(ranges, numeric)


MAX_URL = 2048
URL_HINT = "expected an http:// or https:// URL such as http://collector:4318"


def otlp_endpoint(value: Any) -> str:
    """An OTLP/HTTP base URL: http(s), a host, an optional port and path; no user
    information, query or fragment. Normalised without a trailing ``/`` (the sidecar
    posts to ``{endpoint}/v1/traces``)."""
    from urllib.parse import urlsplit  # only where settings are read

    if not isinstance(value, str) or not value or len(value) > MAX_URL:
        raise ValueError(URL_HINT)
    if CONTROL.search(value) or " " in value or not value.isascii():
        raise ValueError(f"{shown(value)}: {URL_HINT}")
    try:
        parts = urlsplit(value)
        port = parts.port
    except ValueError:
        raise ValueError(f"{shown(value)}: {URL_HINT}") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"{shown(value)}: {URL_HINT}")
    if "@" in parts.netloc or parts.query or parts.fragment or value.endswith(("?", "#")):
        raise ValueError(f"{shown(value)}: no user, query or fragment; {URL_HINT}")
    if port == 0:
        raise ValueError(f"{shown(value)}: port 0")
    return value.rstrip("/")

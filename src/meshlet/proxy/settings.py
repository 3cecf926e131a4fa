"""The sidecar's reading of per-service settings, without pydantic.

The control plane declares and validates settings with a pydantic model
(``state/config_entry.py``) and stores them normalised; the agent pushes them as stored.
A sidecar must not load pydantic (with the state machine it was a fifth of a sidecar's
memory), so it reads them here: the same keys, defaults, ranges and coherence rules
(the rules themselves are shared, in ``meshlet.settings_rules``), the same field paths
and much the same messages in its errors. It accepts every normalised value and the
human forms of durations (``"250ms"``) and status lists (``"502,503"``); it is stricter
than pydantic's lax coercions (``"3"`` for an integer, ``1`` for a boolean are refused).
``tests/unit/test_sidecar_settings.py`` holds the two readers to the same verdicts.

``validate_settings(raw)`` gives the normalised form of the keys given (JSON values);
``parsed(normalised)`` the typed, frozen view the cluster reads on every request.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from meshlet.durations import parse_duration
from meshlet.errors import ConfigError
from meshlet.settings_rules import (
    FIELD_PREFIX,
    GRPC_RETRYABLE,
    LB_POLICIES,
    MAX_COUNT,
    MAX_DURATION,
    MAX_HEADERS,
    MAX_RATE,
    MAX_ROUTES,
    MAX_SPLITS,
    MAX_STATUSES,
    PROTOCOLS,
    at_least,
    at_most,
    check_backoff,
    check_maglev_size,
    check_partition,
    check_retry_on,
    check_split,
    finite_bound,
    header_map,
    header_names,
    key_source,
    limited,
    method_names,
    otlp_endpoint,
    shard_names,
    status_list,
)

__all__ = ["DEFAULTS", "KNOWN_KEYS", "Partition", "Route", "Settings", "at_least", "at_most",
           "effective", "parsed", "validate_settings"]



class Invalid(Exception):
    """A value that does not fit, at ``path`` (a list of keys and indexes)."""

    def __init__(self, path: list[str], message: str) -> None:
        super().__init__(message)
        self.path = path
        self.message = message


Check = Callable[[Any, list[str]], Any]


# -- value checks: each returns the normalised value or raises Invalid ------------------


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _shown(bound: float) -> str:
    """A bound as pydantic writes it: ``100`` for 100.0, ``0.5`` for 0.5."""
    return str(int(bound)) if float(bound).is_integer() else repr(float(bound))


def _bounded(value: float, path: list[str], ge: float | None, gt: float | None,
             le: float | None) -> None:
    if gt is not None and not value > gt:
        raise Invalid(path, f"Input should be greater than {_shown(gt)}")
    if ge is not None and not value >= ge:
        raise Invalid(path, f"Input should be greater than or equal to {_shown(ge)}")
    if le is not None and not value <= le:
        raise Invalid(path, f"Input should be less than or equal to {_shown(le)}")


def _finite(value: Any, path: list[str]) -> None:
    _ruled(finite_bound, value, path)


def integer(ge: float | None = None, le: float | None = None) -> Check:
    def check(value: Any, path: list[str]) -> int:
        if isinstance(value, float):  # a huge int is fine here: its bound refuses it
            _finite(value, path)
        if not _is_number(value) or (isinstance(value, float) and not value.is_integer()):
            raise Invalid(path, "Input should be a valid integer")
        _bounded(value, path, ge, None, le)
        return int(value)
    return check


def number(ge: float | None = None, gt: float | None = None,
           le: float | None = None) -> Check:
    def check(value: Any, path: list[str]) -> float:
        if not _is_number(value):
            raise Invalid(path, "Input should be a valid number")
        _finite(value, path)
        _bounded(value, path, ge, gt, le)
        return float(value)
    return check


def duration(positive: bool) -> Check:
    def check(value: Any, path: list[str]) -> float:
        try:
            seconds = parse_duration(value, "duration")
        except ConfigError as exc:
            raise Invalid(path, exc.message.removeprefix("duration: ")) from None
        _bounded(seconds, path, None if positive else 0, 0 if positive else None,
                 MAX_DURATION)
        return seconds
    return check


def boolean(value: Any, path: list[str]) -> bool:
    if not isinstance(value, bool):
        raise Invalid(path, "Input should be a valid boolean")
    return value


def text(min_length: int = 0) -> Check:
    def check(value: Any, path: list[str]) -> str:
        if not isinstance(value, str):
            raise Invalid(path, "Input should be a valid string")
        if len(value) < min_length:
            raise Invalid(path, f"String should have at least {min_length} character")
        return value
    return check


def choice(*values: str) -> Check:
    quoted = [repr(v) for v in values]
    hint = ", ".join(quoted[:-1]) + f" or {quoted[-1]}" if len(quoted) > 1 else quoted[0]

    def check(value: Any, path: list[str]) -> str:
        if value not in values or not isinstance(value, str):
            raise Invalid(path, f"Input should be {hint}")
        return value
    return check


def optional(inner: Check) -> Check:
    return lambda value, path: None if value is None else inner(value, path)


def _ruled(rule: Callable[[Any], Any] | None, value: Any, path: list[str]) -> Any:
    """``value`` through a shared rule (``settings_rules``), its ValueError as Invalid."""
    if rule is None:
        return value
    try:
        return rule(value)
    except ValueError as exc:
        raise Invalid(path, str(exc)) from None


def status_or_name(value: Any, path: list[str]) -> int | str:
    """An HTTP status, or a gRPC status's name (``check_retry_on`` knows which)."""
    if isinstance(value, str):
        return value
    result: int = integer()(value, path)
    return result


def list_of(inner: Check, before: Callable[[Any], Any] | None = None,
            rule: Callable[[Any], Any] | None = None) -> Check:
    def check(value: Any, path: list[str]) -> list[Any]:
        value = _ruled(before, value, path)
        if not isinstance(value, (list, tuple)):
            raise Invalid(path, "Input should be a valid list")
        items: list[Any] = _ruled(rule, [inner(v, [*path, str(i)])
                                         for i, v in enumerate(value)], path)
        return items
    return check


def mapping_of(inner: Check, rule: Callable[[Any], Any] | None = None) -> Check:
    def check(value: Any, path: list[str]) -> dict[str, Any]:
        if not isinstance(value, Mapping):
            raise Invalid(path, "Input should be a valid dictionary")
        items: dict[str, Any] = _ruled(rule, {str(k): inner(v, [*path, str(k)])
                                              for k, v in value.items()}, path)
        return items
    return check


def either(*checks: Check) -> Check:
    """The first check that accepts; the last one's error otherwise."""
    def check(value: Any, path: list[str]) -> Any:
        for one in checks[:-1]:
            try:
                return one(value, path)
            except Invalid:
                pass
        return checks[-1](value, path)
    return check


def key_check(value: Any, path: list[str]) -> str:
    try:
        return key_source(value)
    except ValueError as exc:
        raise Invalid(path, str(exc)) from None


def rule_of(inner: Check, rule: Callable[[Any], Any]) -> Check:
    """``inner``, then a shared rule (``settings_rules``) on what it accepted."""
    return lambda value, path: _ruled(rule, inner(value, path), path)


def model(cls: type[Any]) -> Check:
    """A nested object: its keys checked by ``cls``'s fields, unknown keys refused."""
    return lambda value, path: read(cls, value, path)


def checked(check: Check, alias: str | None = None) -> dict[str, Any]:
    """A field's metadata: its check, and its key in JSON when that is not its name."""
    return {"check": check, "alias": alias}


def read(cls: type[Any], value: Any, path: list[str]) -> Any:
    if not isinstance(value, Mapping):
        raise Invalid(path, "Input should be a valid dictionary")
    fields = {f.metadata["alias"] or f.name: f for f in dataclasses.fields(cls)}
    for key in value:
        if key not in fields:
            message = f"unknown setting (known: {', '.join(KNOWN_KEYS)})" \
                if cls is Settings else "Extra inputs are not permitted"
            raise Invalid([*path, str(key)], message)
    kwargs = {}
    for key, f in fields.items():
        if key in value:
            kwargs[f.name] = f.metadata["check"](value[key], [*path, key])
        elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            raise Invalid([*path, key], "Field required")
    try:
        return cls(**kwargs)
    except ValueError as exc:  # a model-level rule; its message may name a field
        message = str(exc)
        inner = FIELD_PREFIX.match(message)
        if inner:
            raise Invalid([*path, *inner.group(1).split(".")], inner.group(2)) from None
        raise Invalid(path, message) from None


def dump(value: Any) -> Any:
    """The JSON form: as ``model_dump(by_alias=True, mode="json")`` gives it."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.metadata["alias"] or f.name: dump(getattr(value, f.name))
                for f in dataclasses.fields(value)}
    if isinstance(value, (list, tuple)):
        return [dump(v) for v in value]
    if isinstance(value, dict):
        return {k: dump(v) for k, v in value.items()}
    return value


# -- the settings -----------------------------------------------------------------------

SECONDS, SECONDS_OR_ZERO = duration(positive=True), duration(positive=False)
HEADER_MAP = mapping_of(text(), rule=header_map)
RANGE_BOUND = either(text(), number())


def finite(inner: Check) -> Check:
    """``inner``, after refusing numbers that are not finite (``finite_bound``)."""
    return lambda value, path: inner(_ruled(finite_bound, value, path), path)


range_bound = finite(RANGE_BOUND)


def count(ge: int) -> Check:
    return integer(ge=ge, le=MAX_COUNT)


def rate() -> Check:
    return number(ge=0.0, le=MAX_RATE)


@dataclass(frozen=True, slots=True)
class Range:
    """Keys from ``from`` to ``to`` inclusive (see ``settings_rules.at_most``)."""

    from_: str | float = field(metadata=checked(range_bound, alias="from"))
    to: str | float = field(metadata=checked(range_bound))
    shard: str = field(metadata=checked(text(min_length=1)))


@dataclass(frozen=True, slots=True)
class Partition:
    key: str = field(metadata=checked(key_check))
    strategy: str = field(metadata=checked(choice("hash", "range", "random")))
    shards: int | list[str] | None = field(
        default=None, metadata=checked(optional(finite(either(integer(), list_of(text()))))))
    hash: str = field(default="consistent", metadata=checked(choice("modulo", "consistent")))
    ranges: list[Range] = field(default_factory=list, metadata=checked(list_of(model(Range))))
    numeric: bool = field(default=False, metadata=checked(boolean))
    default_shard: str | None = field(default=None, metadata=checked(optional(text())))

    def __post_init__(self) -> None:
        check_partition(self.strategy, self.shards, self.ranges, self.numeric)

    def shard_names(self) -> list[str]:
        return shard_names(self.shards)


@dataclass(frozen=True, slots=True)
class Match:
    path_prefix: str = field(default="/", metadata=checked(text()))
    headers: dict[str, str] = field(default_factory=dict, metadata=checked(HEADER_MAP))
    methods: list[str] = field(default_factory=list, metadata=checked(
        list_of(text(), rule=method_names)))


@dataclass(frozen=True, slots=True)
class SplitTarget:
    subset: dict[str, str] = field(default_factory=dict, metadata=checked(
        mapping_of(text(), rule=limited(MAX_HEADERS, "labels"))))
    weight: int = field(default=1, metadata=checked(integer(ge=0, le=10000)))


@dataclass(frozen=True, slots=True)
class HeaderRewrite:
    set: dict[str, str] = field(default_factory=dict, metadata=checked(HEADER_MAP))
    remove: list[str] = field(default_factory=list, metadata=checked(
        list_of(text(), rule=header_names)))


@dataclass(frozen=True, slots=True)
class Route:
    match: Match = field(default_factory=Match, metadata=checked(model(Match)))
    split: list[SplitTarget] = field(default_factory=list, metadata=checked(
        list_of(model(SplitTarget), rule=limited(MAX_SPLITS, "split targets"))))
    request_headers: HeaderRewrite = field(default_factory=HeaderRewrite,
                                           metadata=checked(model(HeaderRewrite)))
    timeout: float | None = field(default=None, metadata=checked(optional(SECONDS)))

    def __post_init__(self) -> None:
        check_split([t.weight for t in self.split], self.match.path_prefix)


@dataclass(frozen=True, slots=True)
class Settings:
    # load balancing
    lb: str = field(default="round_robin", metadata=checked(choice(*LB_POLICIES)))
    hash_on: str | None = field(default=None, metadata=checked(optional(key_check)))
    min_ring_size: int = field(default=1024, metadata=checked(integer(ge=16, le=MAX_COUNT)))
    maglev_table_size: int = field(default=65537, metadata=checked(integer(ge=7, le=1_000_003)))
    ewma_decay: float = field(default=10.0, metadata=checked(SECONDS))
    locality_min_healthy: float = field(default=0.7, metadata=checked(number(ge=0.0, le=1.0)))
    locality_max_outstanding: int = field(default=100, metadata=checked(count(ge=1)))
    protocol: str = field(default="http", metadata=checked(choice(*PROTOCOLS)))
    # timeouts
    connect_timeout: float = field(default=1.0, metadata=checked(SECONDS))
    request_timeout: float = field(default=15.0, metadata=checked(SECONDS))
    per_try_timeout: float = field(default=0.0, metadata=checked(SECONDS_OR_ZERO))
    idle_timeout: float = field(default=60.0, metadata=checked(SECONDS))
    # retries
    retries: int = field(default=2, metadata=checked(integer(ge=0, le=10)))
    retry_on: list[int | str] = field(default_factory=list, metadata=checked(
        list_of(status_or_name, before=status_list,
                rule=limited(MAX_STATUSES, "status codes"))))
    retry_non_idempotent: bool = field(default=False, metadata=checked(boolean))
    retry_backoff: float = field(default=0.025, metadata=checked(SECONDS_OR_ZERO))
    retry_backoff_max: float = field(default=0.25, metadata=checked(SECONDS_OR_ZERO))
    retry_budget_percent: float = field(default=20.0, metadata=checked(number(ge=0.0, le=100.0)))
    retry_budget_min_per_second: float = field(default=10.0, metadata=checked(rate()))
    # circuit breaking
    max_connections: int = field(default=1024, metadata=checked(count(ge=1)))
    max_pending_requests: int = field(default=1024, metadata=checked(count(ge=1)))
    max_requests: int = field(default=1024, metadata=checked(count(ge=1)))
    max_retries: int = field(default=3, metadata=checked(count(ge=0)))
    # outlier detection
    outlier_consecutive_failures: int = field(default=5, metadata=checked(count(ge=0)))
    outlier_base_ejection_time: float = field(default=30.0, metadata=checked(SECONDS))
    outlier_max_ejection_time: float = field(default=300.0, metadata=checked(SECONDS))
    outlier_max_ejection_percent: float = field(default=50.0,
                                                metadata=checked(number(ge=0.0, le=100.0)))
    # inbound protection
    rate_limit_rps: float = field(default=0.0, metadata=checked(rate()))
    rate_limit_burst: int = field(default=0, metadata=checked(count(ge=0)))
    # routing and sharding
    routes: list[Route] = field(default_factory=list, metadata=checked(
        list_of(model(Route), rule=limited(MAX_ROUTES, "routes"))))
    partition: Partition | None = field(default=None, metadata=checked(optional(model(Partition))))
    access_log: str = field(default="errors", metadata=checked(choice("all", "errors", "off")))
    # tracing (the service's own sidecars)
    tracing_endpoint: str | None = field(default=None, metadata=checked(
        optional(rule_of(text(), otlp_endpoint))))
    trace_sampling: float = field(default=1.0, metadata=checked(number(ge=0.0, le=1.0)))

    @property
    def retry_on_grpc(self) -> frozenset[int]:
        """The gRPC statuses ``retry_on`` names (``unavailable``…), as codes."""
        return frozenset(GRPC_RETRYABLE[name] for name in self.retry_on
                         if isinstance(name, str))

    def __post_init__(self) -> None:
        check_retry_on(self.retry_on)
        check_maglev_size(self.maglev_table_size)
        check_backoff(self.retry_backoff, self.retry_backoff_max)


KNOWN_KEYS = tuple(f.name for f in dataclasses.fields(Settings))
DEFAULTS: dict[str, Any] = {k: v for k, v in dump(Settings()).items() if v is not None}


def parsed(settings: Mapping[str, Any]) -> Settings:
    """The typed view of settings; raise ConfigError naming the field."""
    if not isinstance(settings, Mapping):
        raise ConfigError("settings: expected an object", "settings")
    try:
        result: Settings = read(Settings, settings, [])
    except Invalid as exc:
        where = ".".join(exc.path) or "settings"
        raise ConfigError(f"{where}: {exc.message}", where) from None
    return result


def validate_settings(settings: Mapping[str, object]) -> dict[str, Any]:
    """Normalised settings (only the keys given); raise ConfigError naming the field."""
    dumped = dump(parsed(settings))
    return {key: dumped[key] for key in settings}


def effective(settings: Mapping[str, Any]) -> dict[str, Any]:
    """Defaults overlaid with an entry's (validated) settings."""
    return {**DEFAULTS, **settings}

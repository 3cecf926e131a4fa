"""Per-service settings: how callers balance, route, retry and protect a service.

One pydantic model declares every key with its type, range and default, so the API,
the CLI, the state machine and the sidecar agree on what is valid. Entries store only
the keys that were set; ``effective`` overlays them on the defaults. Errors carry the
field path (``partition.ranges.1.from``). Pure: no I/O.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    model_validator,
)

from meshlet.durations import parse_duration
from meshlet.errors import ConfigError
from meshlet.settings_rules import (
    FIELD_PREFIX,
    LB_POLICIES,
    MAX_COUNT,
    MAX_DURATION,
    MAX_HEADERS,
    MAX_RATE,
    MAX_ROUTES,
    MAX_SPLITS,
    MAX_STATUSES,
    PROTOCOLS,
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


def _duration(value: Any) -> float:
    try:
        return parse_duration(value, "duration")
    except ConfigError as exc:
        raise ValueError(exc.message.removeprefix("duration: ")) from None


StatusList = Annotated[list[int | str], BeforeValidator(status_list),
                      AfterValidator(limited(MAX_STATUSES, "status codes"))]
Duration = Annotated[float, BeforeValidator(_duration), Field(ge=0, le=MAX_DURATION)]
PositiveDuration = Annotated[float, BeforeValidator(_duration), Field(gt=0, le=MAX_DURATION)]
KeySource = Annotated[str, BeforeValidator(key_source)]
HeaderMap = Annotated[dict[str, str], AfterValidator(header_map)]
HeaderNames = Annotated[list[str], AfterValidator(header_names)]
Methods = Annotated[list[str], AfterValidator(method_names)]
Labels = Annotated[dict[str, str], AfterValidator(limited(MAX_HEADERS, "labels"))]
RangeBound = Annotated[str | float, BeforeValidator(finite_bound)]
Count = Annotated[int, Field(le=MAX_COUNT)]
Rate = Annotated[float, Field(le=MAX_RATE)]


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)


class Range(Strict):
    """Keys from ``from`` to ``to`` inclusive. A string bound also covers keys that
    start with it: ``a``..``f`` holds ``acme`` and ``foo``, not ``g``."""

    from_: RangeBound = Field(alias="from")
    to: RangeBound
    shard: str = Field(min_length=1)

    model_config = ConfigDict(extra="forbid", populate_by_name=True)


class Partition(Strict):
    key: KeySource
    strategy: Literal["hash", "range", "random"]
    shards: Annotated[int | list[str] | None, BeforeValidator(finite_bound)] = None
    hash: Literal["modulo", "consistent"] = "consistent"
    ranges: list[Range] = []
    numeric: bool = False
    default_shard: str | None = None

    @model_validator(mode="after")
    def _coherent(self) -> Partition:
        check_partition(self.strategy, self.shards, self.ranges, self.numeric)
        return self

    def shard_names(self) -> list[str]:
        return shard_names(self.shards)


class Match(Strict):
    path_prefix: str = "/"
    headers: HeaderMap = {}
    methods: Methods = []


class SplitTarget(Strict):
    subset: Labels = {}
    weight: int = Field(default=1, ge=0, le=10000)


class HeaderRewrite(Strict):
    """Headers set on (or removed from) the request the sidecar sends to the app."""

    set: HeaderMap = {}
    remove: HeaderNames = []


class Route(Strict):
    match: Match = Match()
    split: Annotated[list[SplitTarget], AfterValidator(limited(MAX_SPLITS, "split targets"))
                     ] = []
    request_headers: HeaderRewrite = HeaderRewrite()
    timeout: PositiveDuration | None = None

    @model_validator(mode="after")
    def _split(self) -> Route:
        check_split([t.weight for t in self.split], self.match.path_prefix)
        return self


class Settings(Strict):
    # load balancing
    lb: Literal[LB_POLICIES] = "round_robin"  # type: ignore[valid-type]
    hash_on: KeySource | None = None
    min_ring_size: int = Field(default=1024, ge=16, le=MAX_COUNT)
    maglev_table_size: int = Field(default=65537, ge=7, le=1_000_003)
    ewma_decay: PositiveDuration = 10.0
    locality_min_healthy: float = Field(default=0.7, ge=0.0, le=1.0)
    locality_max_outstanding: Count = Field(default=100, ge=1)
    protocol: Literal[PROTOCOLS] = "http"  # type: ignore[valid-type]
    # timeouts
    connect_timeout: PositiveDuration = 1.0
    request_timeout: PositiveDuration = 15.0
    per_try_timeout: Duration = 0.0
    idle_timeout: PositiveDuration = 60.0
    # retries
    retries: int = Field(default=2, ge=0, le=10)
    retry_on: StatusList = []
    retry_non_idempotent: bool = False
    retry_backoff: Duration = 0.025
    retry_backoff_max: Duration = 0.25
    retry_budget_percent: float = Field(default=20.0, ge=0.0, le=100.0)
    retry_budget_min_per_second: Rate = Field(default=10.0, ge=0.0)
    # circuit breaking
    max_connections: Count = Field(default=1024, ge=1)
    max_pending_requests: Count = Field(default=1024, ge=1)
    max_requests: Count = Field(default=1024, ge=1)
    max_retries: Count = Field(default=3, ge=0)
    # outlier detection
    outlier_consecutive_failures: Count = Field(default=5, ge=0)
    outlier_base_ejection_time: PositiveDuration = 30.0
    outlier_max_ejection_time: PositiveDuration = 300.0
    outlier_max_ejection_percent: float = Field(default=50.0, ge=0.0, le=100.0)
    # inbound protection
    rate_limit_rps: Rate = Field(default=0.0, ge=0.0)
    rate_limit_burst: Count = Field(default=0, ge=0)
    # routing and sharding
    routes: Annotated[list[Route], AfterValidator(limited(MAX_ROUTES, "routes"))] = []
    partition: Partition | None = None
    access_log: Literal["all", "errors", "off"] = "errors"
    # tracing (the service's own sidecars)
    tracing_endpoint: Annotated[str, AfterValidator(otlp_endpoint)] | None = None
    trace_sampling: float = Field(default=1.0, ge=0.0, le=1.0)

    @model_validator(mode="after")
    def _coherent(self) -> Settings:
        check_retry_on(self.retry_on)
        check_maglev_size(self.maglev_table_size)
        check_backoff(self.retry_backoff, self.retry_backoff_max)
        return self


DEFAULTS: dict[str, Any] = Settings().model_dump(by_alias=True, exclude_none=True)
KNOWN_KEYS = tuple(Settings.model_fields)


def validate_settings(settings: Mapping[str, object]) -> dict[str, Any]:
    """Normalised settings (only the keys given); raise ConfigError naming the field."""
    if not isinstance(settings, Mapping):
        raise ConfigError("settings: expected an object", "settings")
    try:
        model = Settings.model_validate(dict(settings))
    except ValidationError as exc:
        err = exc.errors()[0]
        loc = [str(p) if p != "from_" else "from" for p in err["loc"]]
        message = err["msg"].removeprefix("Value error, ")
        inner = FIELD_PREFIX.match(message)
        if err["type"] == "value_error" and inner:  # a model-level check naming its field
            loc += inner.group(1).split(".")
            message = inner.group(2)
        if err["type"] == "extra_forbidden" and len(loc) == 1:
            message = f"unknown setting (known: {', '.join(KNOWN_KEYS)})"
        field = ".".join(loc) or "settings"
        raise ConfigError(f"{field}: {message}", field) from None
    dumped = model.model_dump(by_alias=True, mode="json")
    return {key: dumped[key] for key in settings}


def effective(settings: Mapping[str, Any]) -> dict[str, Any]:
    """Defaults overlaid with an entry's (validated) settings."""
    return {**DEFAULTS, **settings}


def parsed(settings: Mapping[str, Any]) -> Settings:
    """The typed view of validated settings (the sidecar has its own, without pydantic:
    ``meshlet.proxy.settings``)."""
    return Settings.model_validate(dict(settings))

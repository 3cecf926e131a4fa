"""Per-service configuration entries: what a sidecar needs to know to call a service.

Validation is pure so the API, the CLI and the state machine all agree on what is valid.
Later issues add keys (more LB policies, partitions, breakers); each key is declared
once in ``_FIELDS`` with its parser.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from meshlet.errors import ConfigError
from meshlet.state.durations import parse_duration

LB_POLICIES = ("round_robin",)
PROTOCOLS = ("http", "tcp")

DEFAULTS: dict[str, Any] = {
    "lb": "round_robin",
    "protocol": "http",
    "connect_timeout": 1.0,
    "request_timeout": 15.0,
    "retries": 2,
}


def _choice(options: tuple[str, ...]) -> Callable[[object, str], str]:
    def parse(value: object, field: str) -> str:
        if not isinstance(value, str) or value not in options:
            raise ConfigError(
                f"{field}: {value!r} is not one of {', '.join(options)}", field)
        return value
    return parse


def _bounded_int(low: int, high: int) -> Callable[[object, str], int]:
    def parse(value: object, field: str) -> int:
        if isinstance(value, str) and value.strip().lstrip("-").isdigit():
            value = int(value)
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{field}: expected a whole number", field)
        if not low <= value <= high:
            raise ConfigError(f"{field}: {value} is outside {low}..{high}", field)
        return value
    return parse


def _positive_duration(value: object, field: str) -> float:
    seconds = parse_duration(value, field)
    if seconds == 0:
        raise ConfigError(f"{field}: must be greater than zero", field)
    return seconds


_FIELDS: dict[str, Callable[[object, str], Any]] = {
    "lb": _choice(LB_POLICIES),
    "protocol": _choice(PROTOCOLS),
    "connect_timeout": _positive_duration,
    "request_timeout": _positive_duration,
    "retries": _bounded_int(0, 10),
}


def validate_settings(settings: Mapping[str, object]) -> dict[str, Any]:
    """Return normalised settings; raise ConfigError naming the first bad key."""
    if not isinstance(settings, Mapping):
        raise ConfigError("settings: expected an object", "settings")
    normalised: dict[str, Any] = {}
    for key, value in settings.items():
        parser = _FIELDS.get(key)
        if parser is None:
            raise ConfigError(
                f"{key}: unknown setting (known: {', '.join(sorted(_FIELDS))})", key)
        normalised[key] = parser(value, key)
    return normalised


def effective(settings: Mapping[str, Any]) -> dict[str, Any]:
    """Defaults overlaid with an entry's settings."""
    return {**DEFAULTS, **settings}

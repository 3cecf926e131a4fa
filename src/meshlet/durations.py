"""Human durations ("250ms", "2s", "1m") to float seconds."""

from __future__ import annotations

import math
import re

from meshlet.errors import ConfigError

_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "": 1.0}
_PATTERN = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h)?\s*$")


def parse_duration(value: object, field: str) -> float:
    """Accept a number of seconds or a string with a unit; raise ConfigError otherwise
    (also for infinity and NaN, which ``1e400`` in JSON or a long string of digits gives)."""
    if isinstance(value, bool):
        raise ConfigError(f"{field}: expected a duration such as '2s' or '250ms'", field)
    if isinstance(value, (int, float)):
        seconds = float(value) if abs(value) < 1e300 else float("inf")  # no OverflowError
    elif isinstance(value, str):
        match = _PATTERN.match(value)
        if not match:
            raise ConfigError(
                f"{field}: {value!r} is not a duration (examples: 2s, 250ms, 1m)", field)
        seconds = float(match.group(1)) * _UNITS[match.group(2) or ""]
    else:
        raise ConfigError(f"{field}: expected a duration such as '2s' or '250ms'", field)
    if not math.isfinite(seconds):
        raise ConfigError(f"{field}: must be a finite number of seconds", field)
    if seconds < 0:
        raise ConfigError(f"{field}: must not be negative", field)
    return seconds

"""Memory sizes and CPU counts as `docker run` (``64m``, ``1.5``) and Kubernetes
(``64Mi``, ``500m``) write them. Pure: the CLI, the control plane and manifests share
one reading."""

from __future__ import annotations

import math
import re

from meshlet.errors import ConfigError

MIN_MEMORY = 6 * 1024 * 1024        # Docker's smallest limit: below it runc cannot start
MAX_MEMORY = 1 << 50
MAX_CPUS = 1024.0
_BINARY = {"": 1, "b": 1, "k": 1024, "m": 1024 ** 2, "g": 1024 ** 3, "t": 1024 ** 4}
_KUBERNETES = {"": 1, "Ki": 1024, "Mi": 1024 ** 2, "Gi": 1024 ** 3, "Ti": 1024 ** 4,
               "k": 1000, "K": 1000, "M": 1000 ** 2, "G": 1000 ** 3, "T": 1000 ** 4}
_SIZE = re.compile(r"^([0-9]{1,16}(?:\.[0-9]{1,6})?)([A-Za-z]{0,2})\Z")


def parse_memory(text: object, field: str = "memory", kubernetes: bool = False) -> int:
    """Bytes, at least 6 MiB, from Docker's ``64m``/``1G`` (powers of 1024, any case) or,
    with ``kubernetes``, from ``64Mi`` (1024) and ``64M`` (1000). Raises ConfigError."""
    if isinstance(text, int) and not isinstance(text, bool):
        value = text
    else:
        found = _SIZE.match(text.strip()) if isinstance(text, str) else None
        unit = found.group(2) if found else ""
        scale = (_KUBERNETES.get(unit) if kubernetes else _BINARY.get(unit.lower())) \
            if found else None
        if found is None or scale is None:
            raise ConfigError(f"{field}: {text!r} is not a size such as 64m, 512Mi or 1g",
                              field)
        value = int(float(found.group(1)) * scale)
    if not MIN_MEMORY <= value <= MAX_MEMORY:
        raise ConfigError(f"{field}: {text!r} is outside 6 MiB .. 1 PiB", field)
    return value


def parse_cpus(text: object, field: str = "cpus") -> float:
    """CPUs from ``1.5`` (Docker's --cpus) or ``500m`` (Kubernetes millicores); more than
    0 and at most 1024. Raises ConfigError."""
    value: float | None = None
    if isinstance(text, (int, float)) and not isinstance(text, bool):
        value = float(text)
    elif isinstance(text, str):
        body = text.strip()
        try:
            value = int(body[:-1]) / 1000 if body.endswith("m") and body[:-1].isdigit() \
                else float(body) if re.match(r"^[0-9]{1,5}(\.[0-9]{1,6})?\Z", body) else None
        except ValueError:
            value = None
    if value is None or not math.isfinite(value) or not 0.0 < value <= MAX_CPUS:
        raise ConfigError(f"{field}: {text!r} is not a CPU count such as 0.5, 2 or 500m "
                          f"(more than 0, at most {MAX_CPUS:g})", field)
    return value

"""Restart policies, as `docker run --restart` names them: ``no``, ``on-failure[:N]``,
``always`` and ``unless-stopped``. Pure: the control plane checks a policy with it and
the agent decides with it whether an exited container starts again."""

from __future__ import annotations

import re
from dataclasses import dataclass

from meshlet.errors import ConfigError

POLICIES = ("no", "on-failure", "always", "unless-stopped")
MAX_RETRIES = 1_000_000
_FORM = re.compile(r"^(no|on-failure|always|unless-stopped)(?::([0-9]{1,7}))?\Z")


@dataclass(frozen=True)
class RestartPolicy:
    name: str = "no"
    max_retries: int = 0  # on-failure only; 0 is no limit

    def __str__(self) -> str:
        return f"{self.name}:{self.max_retries}" if self.max_retries else self.name

    def should_restart(self, exit_code: int, restarts: int) -> bool:
        """Whether a container that exited with ``exit_code`` on its own (not stopped
        by a user) starts again, after ``restarts`` restarts so far."""
        if self.name in ("always", "unless-stopped"):
            return True
        if self.name == "on-failure" and exit_code != 0:
            return self.max_retries == 0 or restarts < self.max_retries
        return False


def parse_restart(text: object) -> RestartPolicy:
    """``no``, ``always``, ``unless-stopped``, ``on-failure`` or ``on-failure:N``;
    raises ConfigError naming ``restart``."""
    found = _FORM.match(text) if isinstance(text, str) else None
    if found is None:
        raise ConfigError(f"restart: {text!r} is not one of no, on-failure[:N], always, "
                          "unless-stopped", "restart")
    name, count = found.group(1), found.group(2)
    if count is not None and name != "on-failure":
        raise ConfigError(f"restart: only on-failure takes a retry count ({text!r})",
                          "restart")
    retries = int(count) if count else 0
    if retries > MAX_RETRIES:
        raise ConfigError(f"restart: at most {MAX_RETRIES} retries", "restart")
    return RestartPolicy(name, retries)

"""Restart delays for workloads: ``meshlet.backoff``'s, forgiven after a stable run.

Pure: the caller sleeps for the delay it is given.
"""

from __future__ import annotations

from dataclasses import dataclass

from meshlet.backoff import Backoff


@dataclass
class RestartBackoff(Backoff):
    """Delays between restarts of a process; a run of ``stable_after`` seconds or more
    forgives the failures before it."""

    cap: float = 10.0
    stable_after: float = 10.0

    def next_delay(self, ran_for: float = 0.0) -> float:
        """Delay before the next start, given how long the last run lasted (seconds)."""
        if ran_for >= self.stable_after:
            self.reset()
        return super().next_delay()

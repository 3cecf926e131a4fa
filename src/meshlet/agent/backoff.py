"""Restart delays: exponential, capped, forgiven after a stable run."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class RestartBackoff:
    base: float = 0.2
    cap: float = 10.0
    stable_after: float = 10.0
    failures: int = 0

    def next_delay(self, ran_for: float) -> float:
        """Delay before the next start, given how long the last run lasted (seconds)."""
        if ran_for >= self.stable_after:
            self.failures = 0
        delay: float = min(self.cap, self.base * 2.0 ** self.failures)
        self.failures += 1
        return delay

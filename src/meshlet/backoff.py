"""Retry delays: exponential, capped, started over after a success.

Pure, and at the bottom of the layers so that every retry loop (Raft peers, joining a
cluster, agents calling the server) uses the same one: the caller sleeps for the delay
it is given.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class Backoff:
    """``base`` after the first failure, doubled after each further one up to ``cap``;
    ``reset()`` after a success starts over."""

    base: float = 0.2
    cap: float = 5.0
    failures: int = field(default=0, init=False)

    def next_delay(self) -> float:
        """Delay before the next attempt (seconds); counts one more failure."""
        delay: float = min(self.cap, self.base * 2.0 ** self.failures)
        self.failures += 1
        return delay

    def reset(self) -> None:
        self.failures = 0

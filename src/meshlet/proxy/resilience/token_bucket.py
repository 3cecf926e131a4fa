"""A token bucket: ``rate`` tokens a second, holding at most ``burst``."""

from __future__ import annotations


class TokenBucket:
    def __init__(self, rate: float, burst: int, now: float = 0.0) -> None:
        self.rate = rate
        self.burst = max(burst, 1)
        self.tokens = float(self.burst)
        self.stamp = now

    def __repr__(self) -> str:
        return f"<TokenBucket {self.tokens:.1f}/{self.burst} +{self.rate}/s>"

    def take(self, now: float) -> bool:
        elapsed = now - self.stamp
        if elapsed > 0:
            self.tokens = min(self.burst, self.tokens + elapsed * self.rate)
            self.stamp = now
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return True
        return False

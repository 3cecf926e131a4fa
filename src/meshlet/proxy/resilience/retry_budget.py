"""A retry budget, as Linkerd and Finagle keep one: retries may add at most ``percent``
of the requests seen in the last ``window`` seconds, plus ``min_per_second`` so that a
trickle of traffic can still retry. Retries cannot multiply an outage."""

from __future__ import annotations

import math


class RetryBudget:
    def __init__(self, percent: float = 20.0, min_per_second: float = 10.0,
                 window: float = 10.0, buckets: int = 10) -> None:
        self.ratio = percent / 100.0
        self.min_per_second = min_per_second
        self.window = window
        self.width = window / buckets
        self._requests = [0] * buckets
        self._retries = [0] * buckets
        self._epochs = [-1] * buckets
        self._current = (0.0, -1.0, 0)  # (bucket start, bucket end, slot): the hot path

    def __repr__(self) -> str:
        return (f"<RetryBudget {self.ratio:.0%} +{self.min_per_second}/s "
                f"requests={sum(self._requests)} retries={sum(self._retries)}>")

    def _slot(self, now: float) -> int:
        epoch = math.floor(now / self.width)
        slot = epoch % len(self._epochs)
        if self._epochs[slot] != epoch:  # a bucket from a past window: start it afresh
            self._epochs[slot] = epoch
            self._requests[slot] = 0
            self._retries[slot] = 0
        return slot

    def _live(self, now: float) -> tuple[int, int]:
        oldest = math.floor(now / self.width) - len(self._epochs) + 1
        requests = retries = 0
        for i, epoch in enumerate(self._epochs):
            if epoch >= oldest:
                requests += self._requests[i]
                retries += self._retries[i]
        return requests, retries

    def record_request(self, now: float) -> None:
        start, end, slot = self._current
        if not start <= now < end:
            slot = self._slot(now)
            start = math.floor(now / self.width) * self.width
            self._current = (start, start + self.width, slot)
        self._requests[slot] += 1

    def try_retry(self, now: float) -> bool:
        """Spend one retry if the budget allows it; False if exhausted."""
        requests, retries = self._live(now)
        allowed = self.min_per_second * self.window + self.ratio * requests
        if retries + 1 > allowed:
            return False
        self._retries[self._slot(now)] += 1
        return True

"""What a server that has no cluster yet is waiting for, said once and then again only
when it changes or a while has passed, so a wrong ``--join`` address is seen at once
without flooding the log while a cluster forms."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

REPEAT_AFTER = 30.0  # seconds between two reports of the same situation


class WaitReport:
    def __init__(self, log: logging.Logger, repeat_after: float = REPEAT_AFTER,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.log = log
        self.repeat_after = repeat_after
        self.clock = clock
        self.last_text: str | None = None
        self.last_time = 0.0

    def due(self, text: str) -> bool:
        """Whether ``text`` should be reported now (pure but for the clock)."""
        now = self.clock()
        if text == self.last_text and now - self.last_time < self.repeat_after:
            return False
        self.last_text, self.last_time = text, now
        return True

    def say(self, text: str) -> None:
        if self.due(text):
            self.log.warning("%s", text)

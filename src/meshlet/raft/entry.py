"""One log entry, apart from the state machine so that the log's store can make them."""

from __future__ import annotations

from dataclasses import dataclass

NORMAL = 0
CONFIG = 1


@dataclass(frozen=True)
class Entry:
    term: int
    index: int
    data: bytes = b""
    kind: int = NORMAL

"""Waiting for the state to move past an index: the heart of blocking queries."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any


async def wait_for_index(node: Any, current: Callable[[], int], min_index: int,
                         timeout: float) -> int:
    """Block until ``current()`` exceeds ``min_index`` or ``timeout``; return it. The node
    replaces ``node._changed`` (an Event) and sets the old one on every apply."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while current() <= min_index:
        remaining = deadline - loop.time()
        if remaining <= 0:
            break
        try:
            await asyncio.wait_for(node._changed.wait(), remaining)
        except TimeoutError:
            break
    return current()

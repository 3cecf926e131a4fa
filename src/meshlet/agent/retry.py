"""Calls to the server retried until they are answered: an agent keeps working on what
it last knew while the server is away, and picks up again when it is back."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import TypeVar

from meshlet.backoff import Backoff
from meshlet.errors import MeshletError

log = logging.getLogger(__name__)
T = TypeVar("T")


async def answered(what: str, call: Callable[[], Awaitable[T]]) -> T:
    """``call()``'s answer, retried after 0.2 s doubling to 5 s while the server cannot
    give one; each failure is logged as ``what: error``."""
    backoff = Backoff()
    while True:
        try:
            return await call()
        except MeshletError as exc:
            log.warning("%s: %s", what, exc)
            await asyncio.sleep(backoff.next_delay())

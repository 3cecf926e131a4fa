"""The host's watches are blocking queries: after the first answer each waits past the
index it was given, 0 included, so a table never written (no networks, no containers
yet) is waited on, not polled in a loop."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from meshlet.agent.host_watches import HostWatches


async def test_a_watch_of_an_empty_table_blocks_on_index_zero() -> None:
    asked: list[int | None] = []
    taken: list[Any] = []

    async def fetch(index: int | None) -> tuple[list[str], int]:
        asked.append(index)
        if len(asked) == 3:
            raise asyncio.CancelledError  # enough: stop the watch
        return [], 0  # a table never written: index 0

    watches = HostWatches.__new__(HostWatches)  # follow needs none of its parts
    with pytest.raises(asyncio.CancelledError):
        await watches.follow("watching networks", fetch, taken.append, reprogram=False)
    assert asked == [None, 0, 0] and taken == [[], []]

"""A server that has started serving leaves its start-up heap out of later garbage
collections (``loop.freeze_startup_heap``): a full collection under load walked it
all, a pause of about 50 ms (docs/benchmarks.md, Raft)."""

from __future__ import annotations

import asyncio
import gc
from collections.abc import Iterator
from pathlib import Path

import pytest

from meshlet.server.main import serve_forever
from tests.conftest import async_wait_until


@pytest.fixture
def thawed() -> Iterator[None]:
    gc.unfreeze()
    yield
    gc.unfreeze()


async def test_a_serving_server_has_frozen_its_start_up_heap(tmp_path: Path,
                                                             thawed: None) -> None:
    assert gc.get_freeze_count() == 0
    stop = asyncio.Event()
    serving = asyncio.ensure_future(serve_forever(tmp_path, "127.0.0.1", 0, stop))

    async def frozen() -> bool:
        assert not serving.done() or serving.exception() is None
        return gc.get_freeze_count() > 0
    await async_wait_until(frozen, 30, "the start-up heap frozen")
    stop.set()
    await asyncio.wait_for(serving, 30)
    kept = []
    cycle: list[object] = [kept]
    kept.append(cycle)  # garbage made after the freeze is still collected
    del kept, cycle
    assert gc.collect() >= 2

"""Fixtures the API tests share: a server on loopback with its management token, and
an HTTP session that carries that token. A test module may define its own.

A module that sets ``BOTH_LOOPS = True`` runs each of its tests twice: on asyncio's
own loop, as every other test, and on uvloop, which ``meshlet server`` runs on."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Mapping
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import uvloop

from meshlet.server.main import Server
from tests.conftest import async_management_token


@pytest.fixture
async def server(tmp_path: Path) -> AsyncIterator[Server]:
    srv = await Server.start(tmp_path, "127.0.0.1", 0)
    await async_management_token(tmp_path)
    yield srv
    await srv.stop()


@pytest.fixture
async def http(server: Server) -> AsyncIterator[Any]:
    async with aiohttp.ClientSession(server.url, headers={
            "X-Meshlet-Token": server.acl.token() or ""}) as session:
        yield session


def pytest_asyncio_loop_factories(config: pytest.Config, item: pytest.Item
                                  ) -> Mapping[str, Callable[[], asyncio.AbstractEventLoop]]:
    if getattr(getattr(item, "module", None), "BOTH_LOOPS", False):
        return {"asyncio": asyncio.new_event_loop, "uvloop": uvloop.new_event_loop}
    return {"asyncio": asyncio.new_event_loop}

"""Fixtures the API tests share: a server on loopback with its management token, and
an HTTP session that carries that token. A test module may define its own."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

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

"""A write whose connection drops before the answer is sent once, never again: a
resend could apply it twice, or report a check-and-set that succeeded as a conflict."""

from __future__ import annotations

import asyncio

import pytest

from meshlet.api.client import Client
from meshlet.errors import Unavailable


async def test_a_dropped_put_is_not_sent_again() -> None:
    received = 0

    async def swallow(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal received
        await reader.readuntil(b"\r\n\r\n")
        received += 1
        writer.close()  # the server "dies" after taking the request

    server = await asyncio.start_server(swallow, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        async with Client(f"127.0.0.1:{port}") as client:
            with pytest.raises(Unavailable):
                await client.kv_put("k", b"v", cas=3)
    finally:
        server.close()
        await server.wait_closed()
    assert received == 1

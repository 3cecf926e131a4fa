"""A node whose agent stops heartbeating is deregistered after the TTL; one that
heartbeats stays; the register answer tells agents the TTL."""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path

from meshlet.api.client import Client
from meshlet.server.main import Server, ServerOptions
from meshlet.server.node_reaper import expired
from tests.conftest import async_management_token, async_wait_until


def test_expiry_counts_from_the_later_of_last_heartbeat_and_taking_over() -> None:
    heard = {"a": 100.0, "b": 90.0}
    assert expired(["a", "b", "c"], heard, leading_since=80.0, now=106.0, ttl=10) == [
        "b", "c"]
    # A leader that has just taken over gives everyone a full TTL.
    assert expired(["a", "b", "c"], heard, leading_since=99.0, now=106.0, ttl=10) == []


async def test_silent_nodes_are_reaped_and_live_ones_kept(tmp_path: Path) -> None:
    server = await Server.start(tmp_path, "127.0.0.1", 0, ServerOptions(node_ttl=1.0))
    try:
        token = await async_management_token(tmp_path)
        async with Client(server.url, token=token) as client:
            assert (await client.node_register("ghost", "192.0.2.9"))["ttl"] == 1.0

            async def beat() -> None:
                while True:
                    await client.node_register("live", "192.0.2.1")
                    await asyncio.sleep(0.2)
            beating = asyncio.get_running_loop().create_task(beat())

            async def only_live() -> bool:
                return [n["name"] for n in (await client.nodes())[0]] == ["live"]
            await async_wait_until(only_live, 10, "the silent node to be deregistered")
            live = (await client.nodes())[0][0]
            # A second silent node takes at least a TTL to go; the live one outlasts it,
            # never deregistered and registered again.
            await client.node_register("ghost2", "192.0.2.8")
            await async_wait_until(only_live, 10, "the second silent node to go")
            assert (await client.nodes())[0][0]["create_index"] == live["create_index"]
            beating.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await beating
    finally:
        await server.stop()

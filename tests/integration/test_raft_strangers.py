"""A server's Raft port against frames from strangers: a forged SNAPSHOT from an id
that is not a member, sent over a real socket, changes neither the state nor the term
(before and after a restart), and is counted in the server's metrics."""

from __future__ import annotations

import asyncio
import socket
from pathlib import Path

import aiohttp

from meshlet.api.client import Client
from meshlet.raft.codec import encode
from meshlet.raft.core import Message, MsgType, Snapshot, encode_config
from meshlet.raft.storage import RaftStorage
from meshlet.server.main import Server, ServerOptions
from meshlet.state import StateMachine
from tests.conftest import async_wait_until


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def forged_snapshot(to: str) -> bytes:
    """What an attacker would send: an empty state, a huge term, itself as the only
    member."""
    snap = Snapshot(10_000, 999, encode_config({"intruder": {"raft": "127.0.0.1:1"}}),
                    StateMachine().snapshot())
    return encode(Message(MsgType.SNAPSHOT, "intruder", to, 999, log_term=999,
                          index=10_000, snapshot=snap))


async def send_raw(address: tuple[str, int], frame: bytes) -> None:
    _, writer = await asyncio.open_connection(*address)
    writer.write(frame)
    await writer.drain()
    writer.close()
    await writer.wait_closed()


async def dropped(url: str, reason: str) -> float:
    async with aiohttp.ClientSession() as http, http.get(f"{url}/metrics") as resp:
        text = await resp.text()
    line = f'meshlet_raft_frames_dropped_total{{reason="{reason}"}} '
    return next(float(x.split()[-1]) for x in text.splitlines() if x.startswith(line))


def options(raft: tuple[str, int]) -> ServerOptions:
    return ServerOptions(server_id="s1", raft=raft)


async def test_a_forged_snapshot_from_a_stranger_changes_nothing(tmp_path: Path) -> None:
    raft = ("127.0.0.1", free_port())
    server = await Server.start(tmp_path, "127.0.0.1", 0, options(raft))
    try:
        async with Client(server.url) as client:
            await client.kv_put("app/colour", b"blue")
        term = server.node.status()["raft"]["term"]
        assert await dropped(server.url, "not_member") == 0
        await send_raw(raft, forged_snapshot("s1"))

        async def counted() -> bool:
            return await dropped(server.url, "not_member") >= 1
        await async_wait_until(counted, 10, "the forged frame to be counted")
        status = server.node.status()["raft"]
        assert status["term"] == term and status["snapshots_installed"] == 0
        async with Client(server.url) as client:
            assert await client.kv_get_raw("app/colour") == b"blue"
    finally:
        await server.stop()
    hard, snapshot, _ = RaftStorage(tmp_path / "raft").load()  # what a restart reads
    assert hard.term == term and snapshot is None
    server = await Server.start(tmp_path, "127.0.0.1", 0, options(raft))
    try:
        assert server.node.status()["raft"]["term"] < 999
        assert server.node.driver.members.keys() == {"s1"}
        async with Client(server.url) as client:
            assert await client.kv_get_raw("app/colour") == b"blue"
    finally:
        await server.stop()

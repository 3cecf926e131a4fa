"""A server's Raft port against strangers, over real sockets. A connection without a
certificate of the cluster's CA (in the clear, or from another cluster) is refused
before a frame is read; a forged SNAPSHOT from a server that holds a certificate but
is not a member, or one that claims to come from another server than its certificate
names, changes neither the state nor the term, before or after a restart. Each is
counted in the server's metrics."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import ssl
from pathlib import Path

import aiohttp
import pytest

from meshlet.api.client import Client
from meshlet.raft.codec import encode
from meshlet.raft.core import Message, MsgType, Snapshot, encode_config
from meshlet.raft.storage import RaftStorage
from meshlet.security.credentials import ensure_server_credentials
from meshlet.server.main import Server, ServerOptions
from meshlet.state import StateMachine
from tests.conftest import async_management_token, async_wait_until

TOKEN = "t" * 43


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def forged_snapshot(frm: str, to: str) -> bytes:
    """What an attacker would send: an empty state, a huge term, itself as the only
    member."""
    snap = Snapshot(10_000, 999, encode_config({frm: {"raft": "127.0.0.1:1"}}),
                    StateMachine().snapshot())
    return encode(Message(MsgType.SNAPSHOT, frm, to, 999, log_term=999, index=10_000,
                          snapshot=snap))


def credentials(root: Path, server_id: str, token: str = TOKEN) -> tuple[ssl.SSLContext, str]:
    """A client context holding a certificate for ``server_id`` from ``token``'s CA
    (which checks the server's certificate only if it is the same CA)."""
    creds = ensure_server_credentials(root / f"{server_id}-{token[0]}", token, server_id,
                                      ["127.0.0.1"])
    context = creds.client_context()
    if token != TOKEN:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    return context, creds.server_name


async def send(address: tuple[str, int], frame: bytes,
               tls: tuple[ssl.SSLContext, str] | None = None) -> None:
    if tls is None:
        _, writer = await asyncio.open_connection(*address)
    else:
        _, writer = await asyncio.open_connection(*address, ssl=tls[0],
                                                  server_hostname=tls[1])
    with contextlib.suppress(ConnectionError, ssl.SSLError):  # the server may hang up
        writer.write(frame)
        await writer.drain()
        writer.close()
        await writer.wait_closed()


async def dropped(url: str, reason: str) -> float:
    async with aiohttp.ClientSession() as http, http.get(f"{url}/metrics") as resp:
        text = await resp.text()
    line = f'meshlet_raft_frames_dropped_total{{reason="{reason}"}} '
    return next(float(x.split()[-1]) for x in text.splitlines() if x.startswith(line))


async def counted(url: str, reason: str, n: int) -> None:
    async def enough() -> bool:
        return await dropped(url, reason) >= n
    await async_wait_until(enough, 10, f"{n} frames dropped as {reason}")


def options(raft: tuple[str, int]) -> ServerOptions:
    return ServerOptions(server_id="s1", raft=raft, join_token=TOKEN)


async def test_strangers_change_nothing_and_are_counted(tmp_path: Path) -> None:
    data = tmp_path / "s1"
    raft = ("127.0.0.1", free_port())
    server = await Server.start(data, "127.0.0.1", 0, options(raft))
    try:
        async with Client(server.url, token=await async_management_token(data)) as client:
            await client.kv_put("app/colour", b"blue")
        term = server.node.status()["raft"]["term"]
        for reason in ("not_member", "bad_certificate", "wrong_sender"):
            assert await dropped(server.url, reason) == 0
        # In the clear, and with a certificate of another cluster: no handshake.
        await send(raft, forged_snapshot("intruder", "s1"))
        await send(raft, forged_snapshot("intruder", "s1"),
                   credentials(tmp_path, "intruder", "o" * 43))
        await counted(server.url, "bad_certificate", 2)
        # A certificate of this cluster, for a server that is not a member.
        await send(raft, forged_snapshot("intruder", "s1"), credentials(tmp_path, "intruder"))
        await counted(server.url, "not_member", 1)
        # A certificate for one server, frames that claim another.
        await send(raft, forged_snapshot("s1", "s1"), credentials(tmp_path, "s2"))
        await counted(server.url, "wrong_sender", 1)
        status = server.node.status()["raft"]
        assert status["term"] == term and status["snapshots_installed"] == 0
        async with Client(server.url, token=await async_management_token(data)) as client:
            assert await client.kv_get_raw("app/colour") == b"blue"
    finally:
        await server.stop()
    hard, snapshot, _ = RaftStorage(data / "raft").load()  # what a restart reads
    assert hard.term == term and snapshot is None
    server = await Server.start(data, "127.0.0.1", 0, options(raft))
    try:
        assert server.node.status()["raft"]["term"] < 999
        assert server.node.driver.members.keys() == {"s1"}
        async with Client(server.url, token=await async_management_token(data)) as client:
            assert await client.kv_get_raw("app/colour") == b"blue"
    finally:
        await server.stop()


@pytest.mark.parametrize("loop", ["asyncio", "uvloop"])
def test_two_transports_speak_mutual_tls_on_either_loop(tmp_path: Path, loop: str) -> None:
    """Servers run on uvloop (``meshlet server``), tests on asyncio's loop: the
    handshake must complete on both, and a frame arrive from the server it names."""
    import uvloop

    from meshlet.raft.transport import TcpTransport
    from meshlet.server.tls import ServerTls

    async def exchange() -> list[Message]:
        ports = {"a": free_port(), "b": free_port()}
        got: list[Message] = []
        a = TcpTransport("a", ("127.0.0.1", ports["a"]),
                         tls=ServerTls(tmp_path / "a", TOKEN, "a", ["127.0.0.1"]).raft())
        b = TcpTransport("b", ("127.0.0.1", ports["b"]),
                         tls=ServerTls(tmp_path / "b", TOKEN, "b", ["127.0.0.1"]).raft())
        await a.start(got.append)
        await b.start(lambda m: None)
        try:
            b.set_peers({"a": ("127.0.0.1", ports["a"])})
            b.send(Message(MsgType.APPEND, "b", "a", 7))

            async def arrived() -> bool:
                return bool(got)
            await async_wait_until(arrived, 10, "a frame over mutual TLS")
            assert not a.dropped and not b.dropped
        finally:
            await a.stop()
            await b.stop()
        return got

    factory = uvloop.new_event_loop if loop == "uvloop" else asyncio.new_event_loop
    with asyncio.Runner(loop_factory=factory) as runner:
        got = runner.run(exchange())
    assert [(m.frm, m.term) for m in got] == [("b", 7)]

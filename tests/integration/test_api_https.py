"""The API over HTTPS with a certificate from the cluster CA, on real loopback
sockets. Beyond loopback a server always serves HTTPS; these tests bind 127.0.0.1 and
ask for HTTPS with ``ServerOptions.https`` (loopback only, so no traffic leaves the
machine), which takes the same path. Clients check the server against the ``ca.pem``
it writes; servers join, find each other and forward writes to the leader over it."""

from __future__ import annotations

import asyncio
import json
import socket
import ssl
import stat
from pathlib import Path

import aiohttp
import pytest

from meshlet.addresses import to_url
from meshlet.api.client import Client
from meshlet.errors import Unavailable
from meshlet.server.main import Server, ServerOptions
from tests.conftest import async_management_token, async_wait_until

TOKEN = "h" * 43


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_an_api_beyond_loopback_is_spoken_to_over_https() -> None:
    assert to_url("10.0.0.5:8470") == "https://10.0.0.5:8470"
    assert to_url("http://10.0.0.5:8470") == "https://10.0.0.5:8470"
    assert to_url("127.0.0.1:8470") == "http://127.0.0.1:8470"
    assert to_url("http://localhost:8470") == "http://localhost:8470"


@pytest.mark.parametrize("pooled", [True, False], ids=["pooled", "one-shot"])
async def test_a_server_alone_serves_https_that_clients_check(tmp_path: Path,
                                                             pooled: bool) -> None:
    """Both clients check: the agents' pooled one and the commands' one-shot one."""
    server = await Server.start(tmp_path, "127.0.0.1", 0, ServerOptions(https=True))
    try:
        assert server.url.startswith("https://127.0.0.1:")
        ca_file = tmp_path / "ca.pem"
        assert stat.S_IMODE((tmp_path / "tls" / "server.key").stat().st_mode) == 0o600
        assert stat.S_IMODE((tmp_path / "join.token").stat().st_mode) == 0o600
        token = await async_management_token(tmp_path)
        async with Client(server.url, ca_file=ca_file, token=token, pooled=pooled) as client:
            await client.kv_put("app/colour", b"blue")
            assert await client.kv_get_raw("app/colour") == b"blue"
        with pytest.raises(Unavailable, match="certificate"):  # the system's roots
            async with Client(server.url, pooled=pooled) as client:
                await client.status()
        async with aiohttp.ClientSession() as http:  # in the clear: no answer
            with pytest.raises(aiohttp.ClientError):
                await http.get(server.url.replace("https:", "http:") + "/v1/status")
    finally:
        await server.stop()


async def test_servers_join_and_forward_over_https(tmp_path: Path) -> None:
    raft = {i: ("127.0.0.1", free_port()) for i in ("s1", "s2")}
    first = await Server.start(tmp_path / "s1", "127.0.0.1", 0, ServerOptions(
        server_id="s1", raft=raft["s1"], join_token=TOKEN, https=True))
    second = None
    try:
        second = await Server.start(tmp_path / "s2", "127.0.0.1", 0, ServerOptions(
            server_id="s2", raft=raft["s2"], join=[first.url], join_token=TOKEN,
            https=True))

        async def joined() -> bool:
            return "s2" in first.node.driver.members and second is not None and \
                second.node.machine.ca.root != ""
        await async_wait_until(joined, 20, "s2 to join over HTTPS and mutual TLS")
        assert first.node.machine.ca.root == (tmp_path / "s1" / "ca.pem").read_text()
        ca_file = tmp_path / "s2" / "ca.pem"
        follower = second if first.node.is_leader else first
        token = await async_management_token(tmp_path / "s1")
        async with Client(follower.url, ca_file=ca_file, token=token) as client:  # forwarded
            await client.kv_put("app/colour", b"green")
            assert await client.kv_get_raw("app/colour", consistency="consistent") == b"green"
    finally:
        if second is not None:
            await second.stop()
        await first.stop()


async def test_watches_parked_over_https_are_answered_through_tls(tmp_path: Path) -> None:
    """The hub writes answers straight to plain sockets; a TLS connection's answer must
    go through its encryption instead, or the client would read garbage."""
    server = await Server.start(tmp_path, "127.0.0.1", 0, ServerOptions(https=True))
    writers: list[asyncio.StreamWriter] = []
    try:
        token = await async_management_token(tmp_path)
        context = ssl.create_default_context(cafile=str(tmp_path / "ca.pem"))
        host, port = server.url.removeprefix("https://").rsplit(":", 1)
        request = (f"GET /v1/services/web/instances?index=0 HTTP/1.1\r\nHost: t\r\n"
                   f"X-Meshlet-Token: {token}\r\n\r\n").encode()
        readers = []
        for _ in range(3):
            reader, writer = await asyncio.open_connection(host, int(port), ssl=context)
            writer.write(request)
            readers.append(reader)
            writers.append(writer)

        async def parked() -> bool:
            hub = server.fast_lane.hub
            return hub is not None and len(hub) == 3
        await async_wait_until(parked, 10, "three watches parked")
        assert all(lane.fd == -1 for lane in server.fast_lane.connections)
        async with Client(server.url, ca_file=tmp_path / "ca.pem", token=token) as client:
            await client.register(service="web", id="web-1", address="127.0.0.1", port=80)
        for reader in readers:
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
            assert head.startswith(b"HTTP/1.1 200")
            length = int(head.split(b"Content-Length: ")[1].split(b"\r\n")[0])
            body = await asyncio.wait_for(reader.readexactly(length), 10)
            assert [i["id"] for i in json.loads(body)] == ["web-1"]
    finally:
        for writer in writers:
            writer.close()
        await server.stop()

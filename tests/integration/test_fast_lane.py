"""The server's fast lane for KV puts answers exactly as the aiohttp path does, and hands
every other request (with the bytes after it) to aiohttp."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from meshlet.api.client import Client
from meshlet.errors import NotLeader
from meshlet.server.main import Server
from tests.conftest import async_management_token

SAME_HEADERS = ("Content-Type", "X-Meshlet-Known-Leader")


@pytest.fixture
async def server(tmp_path: Path) -> AsyncIterator[Server]:
    srv = await Server.start(tmp_path, "127.0.0.1", 0)
    AUTH[:] = [f"X-Meshlet-Token: {await async_management_token(tmp_path)}\r\n"]
    yield srv
    await srv.stop()


class RawConnection:
    """A client that writes exact bytes and reads responses one by one."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    @classmethod
    async def open(cls, server: Server) -> RawConnection:
        host, port = server.url.removeprefix("http://").rsplit(":", 1)
        return cls(*await asyncio.open_connection(host, int(port)))

    async def send(self, data: bytes) -> None:
        self.writer.write(data)
        await self.writer.drain()

    async def response(self) -> tuple[int, dict[str, str], bytes]:
        head = await asyncio.wait_for(self.reader.readuntil(b"\r\n\r\n"), 10)
        lines = head.decode().split("\r\n")
        status = int(lines[0].split()[1])
        headers = {}
        for line in lines[1:]:
            if line:
                name, _, value = line.partition(":")
                headers[name.strip().title()] = value.strip()
        body = await self.reader.readexactly(int(headers["Content-Length"]))
        return status, headers, body

    async def close(self) -> None:
        self.writer.close()
        await self.writer.wait_closed()


AUTH: list[str] = []  # the token header of the test's server (set by the fixture)


def put(key: str, value: bytes, query: str = "", extra: str = "",
        auth: bool = True) -> bytes:
    return (f"PUT /v1/kv/{key}{query} HTTP/1.1\r\nHost: t\r\n{extra}"
            f"{AUTH[0] if auth else ''}Content-Length: {len(value)}\r\n\r\n"
            ).encode() + value


def get_status() -> bytes:
    return f"GET /v1/status HTTP/1.1\r\nHost: t\r\n{AUTH[0]}\r\n".encode()


async def through_aiohttp(server: Server) -> RawConnection:
    """A connection already handed to aiohttp (its first request was not a put)."""
    conn = await RawConnection.open(server)
    await conn.send(get_status())
    status, _, _ = await conn.response()
    assert status == 200
    return conn


async def test_a_put_answers_as_aiohttp_would(server: Server) -> None:
    fast = await RawConnection.open(server)
    slow = await through_aiohttp(server)
    try:
        for value, query in ((b"blue", "?cas=0"), (b"red", ""), (b"", "")):
            served = server.fast_lane.served
            await fast.send(put("fast/colour", value, query))
            f_status, f_headers, f_body = await fast.response()
            assert server.fast_lane.served == served + 1
            await slow.send(put("slow/colour", value, query))
            s_status, s_headers, s_body = await slow.response()
            assert server.fast_lane.served == served + 1  # aiohttp answered that one
            assert f_status == s_status == 200
            f_entry, s_entry = json.loads(f_body), json.loads(s_body)
            assert f_entry["key"] == "fast/colour" and s_entry["key"] == "slow/colour"
            assert {k: v for k, v in f_entry.items() if k not in ("key", "modify_index",
                                                                    "create_index")} \
                == {k: v for k, v in s_entry.items() if k not in ("key", "modify_index",
                                                                    "create_index")}
            assert int(f_headers["X-Meshlet-Index"]) == f_entry["modify_index"]
            for name in SAME_HEADERS:
                assert f_headers[name] == s_headers[name], name
        assert server.node.machine.kv["fast/colour"].value == b""
    finally:
        await fast.close()
        await slow.close()


async def test_a_failed_check_and_set_answers_as_aiohttp_would(server: Server) -> None:
    fast = await RawConnection.open(server)
    slow = await through_aiohttp(server)
    try:
        await fast.send(put("taken", b"1"))
        assert (await fast.response())[0] == 200
        await fast.send(put("taken", b"2", "?cas=0"))
        f_status, f_headers, f_body = await fast.response()
        await slow.send(put("taken", b"2", "?cas=0"))
        s_status, s_headers, s_body = await slow.response()
        assert f_status == s_status == 409
        assert json.loads(f_body) == json.loads(s_body)
        assert json.loads(f_body)["error"]["code"] == "conflict"
        assert f_headers["Content-Type"] == s_headers["Content-Type"]
        assert server.node.machine.kv["taken"].value == b"1"
    finally:
        await fast.close()
        await slow.close()


async def test_pipelined_requests_keep_their_order_across_the_hand_over(
        server: Server) -> None:
    conn = await RawConnection.open(server)
    try:
        handed = server.fast_lane.handed_over
        await conn.send(put("p/1", b"a") + put("p/2", b"b") + get_status()
                        + put("p/3", b"c"))
        answers = [await conn.response() for _ in range(4)]
        assert [status for status, _, _ in answers] == [200] * 4
        assert json.loads(answers[0][2])["key"] == "p/1"
        assert json.loads(answers[1][2])["key"] == "p/2"
        assert "raft" in json.loads(answers[2][2])
        assert json.loads(answers[3][2])["key"] == "p/3"
        assert server.fast_lane.handed_over == handed + 1
        kv = server.node.machine.kv
        assert [kv[k].value for k in ("p/1", "p/2", "p/3")] == [b"a", b"b", b"c"]
    finally:
        await conn.close()


async def test_a_body_in_pieces_and_connection_close(server: Server) -> None:
    conn = await RawConnection.open(server)
    try:
        raw = put("split", b"0123456789", extra="Connection: close\r\n")
        for i in range(0, len(raw), 7):  # head and body cut at odd places
            await conn.send(raw[i:i + 7])
        status, headers, _ = await conn.response()
        assert status == 200 and headers["Connection"] == "close"
        assert await asyncio.wait_for(conn.reader.read(), 10) == b""  # closed by the server
        assert server.node.machine.kv["split"].value == b"0123456789"
    finally:
        await conn.close()


async def test_a_large_value_arriving_in_many_reads(server: Server) -> None:
    conn = await RawConnection.open(server)
    try:
        value = bytes(range(256)) * 2048  # 512 KiB, the most a value may hold
        served = server.fast_lane.served
        await conn.send(put("big", value))
        status, _, body = await conn.response()
        assert status == 200, body
        assert server.fast_lane.served == served + 1
        assert server.node.machine.kv["big"].value == value
    finally:
        await conn.close()


async def test_a_malformed_request_gets_aiohttps_refusal(server: Server) -> None:
    conn = await RawConnection.open(server)
    try:
        await conn.send(b"PUT /v1/kv/a HTTP/1.1\r\nContent-Length: nope\r\n\r\n")
        status, _, _ = await conn.response()
        assert status == 400
        assert "a" not in server.node.machine.kv
    finally:
        await conn.close()


async def test_a_client_that_half_closes_gets_its_answer_then_the_close(
        server: Server) -> None:
    conn = await RawConnection.open(server)
    try:
        await conn.send(put("half", b"1") + put("half", b"2"))
        conn.writer.write_eof()
        assert [(await conn.response())[0] for _ in range(2)] == [200, 200]
        assert await asyncio.wait_for(conn.reader.read(), 10) == b""  # then closed
        assert server.node.machine.kv["half"].value == b"2"
    finally:
        await conn.close()


async def test_a_put_that_meets_a_leadership_change_is_replayed_through_aiohttp(
        server: Server, monkeypatch: pytest.MonkeyPatch) -> None:
    """The race (leadership lost between the check and the proposal) is simulated: the
    first proposal fails with NotLeader, which means it did not commit."""
    real = server.api.propose
    refused: list[object] = []

    async def refuse_once(command: object) -> object:
        if not refused:
            refused.append(command)
            raise NotLeader("leadership changed")
        return await real(command)
    monkeypatch.setattr(server.api, "propose", refuse_once)
    conn = await RawConnection.open(server)
    try:
        served, handed = server.fast_lane.served, server.fast_lane.handed_over
        await conn.send(put("moved", b"1") + put("moved", b"2"))
        answers = [await conn.response() for _ in range(2)]
        assert [status for status, _, _ in answers] == [200, 200]
        assert len(refused) == 1
        assert server.fast_lane.served == served  # both answered by aiohttp
        assert server.fast_lane.handed_over == handed + 1
        assert server.node.machine.kv["moved"].value == b"2"
    finally:
        await conn.close()


async def test_the_fast_lane_refuses_a_token_as_aiohttp_would(server: Server) -> None:
    """No token: 401; a token without kv write: 403; a deleted token: 401 at once (the
    cache of resolved tokens goes with the ACL index). Nothing refused changes state."""
    async with Client(server.url, token=server.acl.token()) as admin:
        await admin.policy_create("reader", [{"kind": "kv", "prefix": "", "access": "read"}])
        reader = await admin.token_create(["reader"])
    fast = await RawConnection.open(server)
    slow = await through_aiohttp(server)
    index = server.node.machine.index
    try:
        served = server.fast_lane.served
        header = f"X-Meshlet-Token: {reader['secret']}\r\n"
        for extra, auth, status, code in (("", False, 401, "unauthenticated"),
                                          (header, False, 403, "forbidden")):
            await fast.send(put("denied", b"1", extra=extra, auth=auth))
            f_status, _, f_body = await fast.response()
            await slow.send(put("denied", b"1", extra=extra, auth=auth))
            s_status, _, s_body = await slow.response()
            assert f_status == s_status == status
            assert json.loads(f_body) == json.loads(s_body)
            assert json.loads(f_body)["error"]["code"] == code
        assert server.fast_lane.served == served + 2  # the fast lane answered its two
        assert "denied" not in server.node.machine.kv
        assert server.node.machine.index == index
        async with Client(server.url, token=server.acl.token()) as admin:
            await admin.token_delete(reader["accessor"])
        await fast.send(put("denied", b"1", extra=header, auth=False))
        assert (await fast.response())[0] == 401
    finally:
        await fast.close()
        await slow.close()

"""Blocking watches of a service's instances parked on the fast lane (watch_hub.py)
answer as the aiohttp route does: the same body and index, once the service moves past
the index asked for or the wait runs out, and as the route refuses them."""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
from array import array
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from meshlet.api.client import Client
from meshlet.api.fast_lane import answer_watches
from meshlet.api.parallel_send import PARALLEL_FROM
from meshlet.server.main import Server
from tests.conftest import async_management_token, async_wait_until
from tests.integration.test_fast_lane import SAME_HEADERS, RawConnection

# Every test on uvloop too (conftest.py): the server runs on it, and the hub's direct
# writes must agree with its transports.
BOTH_LOOPS = True


@pytest.fixture
async def server(tmp_path: Path) -> AsyncIterator[Server]:
    srv = await Server.start(tmp_path, "127.0.0.1", 0)
    TOKEN[:] = [await async_management_token(tmp_path)]
    yield srv
    await srv.stop()


TOKEN: list[str] = []


def watch(service: str, index: int, query: str = "", token: str | None = "",
          close: bool = False) -> bytes:
    secret = TOKEN[0] if token == "" else token
    auth = f"X-Meshlet-Token: {secret}\r\n" if secret is not None else ""
    return (f"GET /v1/services/{service}/instances?index={index}{query} HTTP/1.1\r\n"
            f"Host: t\r\n{auth}{'Connection: close' + chr(13) + chr(10) if close else ''}"
            "\r\n").encode()


async def through_aiohttp(server: Server) -> RawConnection:
    conn = await RawConnection.open(server)
    await conn.send(f"GET /v1/status HTTP/1.1\r\nHost: t\r\n"
                    f"X-Meshlet-Token: {TOKEN[0]}\r\n\r\n".encode())
    assert (await conn.response())[0] == 200
    return conn


def parked(server: Server, count: int) -> bool:
    hub = server.fast_lane.hub
    return hub is not None and len(hub) == count


async def hub_holds(server: Server, count: int) -> None:
    async def check() -> bool:
        return parked(server, count)
    await async_wait_until(check, 10, f"{count} parked watches")


def blocking_returns(server: Server, reason: str) -> float:
    return server.api.metrics.blocking_returns.labels(reason)._value.get()


async def test_a_parked_watch_answers_as_the_route_does(server: Server) -> None:
    async with Client(server.url, token=TOKEN[0]) as client:
        await client.register(service="web", id="web-1", address="127.0.0.1", port=8080,
                              status="passing")
        index = server.node.machine.service_index["web"]
        fast = await RawConnection.open(server)
        slow = await through_aiohttp(server)
        try:
            served, changed = server.fast_lane.served, blocking_returns(server, "changed")
            await fast.send(watch("web", index))
            await slow.send(watch("web", index))
            await hub_holds(server, 1)
            await client.register(service="web", id="web-2", address="127.0.0.1", port=8081,
                                  status="critical")
            f_status, f_headers, f_body = await fast.response()
            s_status, s_headers, s_body = await slow.response()
            assert f_status == s_status == 200
            assert json.loads(f_body) == json.loads(s_body)
            assert {i["id"] for i in json.loads(f_body)} == {"web-1", "web-2"}
            assert f_headers["X-Meshlet-Index"] == s_headers["X-Meshlet-Index"] \
                == str(server.node.machine.service_index["web"])
            for name in SAME_HEADERS:
                assert f_headers[name] == s_headers[name], name
            assert server.fast_lane.served == served + 1
            assert blocking_returns(server, "changed") == changed + 2
            assert parked(server, 0)
            # An index the service has moved past is answered at once; the connection
            # is kept, and its next request is served.
            await fast.send(watch("web", index, "&passing"))
            status, _, body = await fast.response()
            assert status == 200 and [i["id"] for i in json.loads(body)] == ["web-1"]
            await slow.send(watch("web", index, "&passing"))
            assert json.loads((await slow.response())[2]) == json.loads(body)
        finally:
            await fast.close()
            await slow.close()


async def test_one_change_answers_every_watch_of_its_service(server: Server) -> None:
    async with Client(server.url, token=TOKEN[0]) as client:
        conns = [await RawConnection.open(server) for _ in range(20)]
        try:
            for n, conn in enumerate(conns):
                await conn.send(watch("api" if n % 2 else "db", 0, "&passing" * (n % 4 == 0)))
            await hub_holds(server, 20)
            assert server.api.metrics.blocking_queries._value.get() == 20
            await client.register(service="api", id="api-1", address="127.0.0.1", port=80)
            answers = [await conn.response() for conn in conns[1::2]]
            assert {json.loads(body)[0]["id"] for _, _, body in answers} == {"api-1"}
            assert parked(server, 10)  # the db watches wait on
            await client.register(service="db", id="db-1", address="127.0.0.1", port=81,
                                  status="critical")
            for n, conn in enumerate(conns[::2]):
                _, _, body = await conn.response()
                assert [i["id"] for i in json.loads(body)] == ([] if n % 2 == 0 else ["db-1"])
            assert parked(server, 0)
            assert server.api.metrics.blocking_queries._value.get() == 0
        finally:
            for conn in conns:
                await conn.close()


async def test_the_wait_running_out_answers_the_state_as_it_is(server: Server) -> None:
    conn = await RawConnection.open(server)
    try:
        timeouts = blocking_returns(server, "timeout")
        await conn.send(watch("quiet", 5, "&wait=100ms", close=True))
        status, headers, body = await conn.response()
        assert (status, json.loads(body), headers["X-Meshlet-Index"]) == (200, [], "0")
        assert headers["Connection"] == "close"
        assert await conn.reader.read() == b""  # and it closes
        assert blocking_returns(server, "timeout") == timeouts + 1
        assert parked(server, 0)
    finally:
        await conn.close()


async def test_a_watch_is_refused_as_the_route_refuses_it(server: Server) -> None:
    async with Client(server.url, token=TOKEN[0]) as admin:
        await admin.policy_create("web-only", [
            {"kind": "service", "prefix": "web", "access": "read"}])
        reader = (await admin.token_create(["web-only"]))["secret"]
    fast = await RawConnection.open(server)
    slow = await through_aiohttp(server)
    try:
        for token, status in ((None, 401), ("not-a-token", 401), (reader, 403)):
            await fast.send(watch("db", 0, token=token))
            f_status, _, f_body = await fast.response()
            await slow.send(watch("db", 0, token=token))
            s_status, _, s_body = await slow.response()
            assert f_status == s_status == status
            assert json.loads(f_body) == json.loads(s_body)
        assert parked(server, 0)
        await fast.send(watch("web", 0, token=reader))
        await hub_holds(server, 1)  # the token's own service: it waits
    finally:
        await fast.close()
        await slow.close()


async def test_a_client_gone_while_parked_leaves_nothing(server: Server) -> None:
    """A reset, a close, or a FIN alone (a half close reads as the client gone, as it
    does to aiohttp): the watch is dropped and its connection closed."""
    conns = [await RawConnection.open(server) for _ in range(4)]
    for conn in conns:
        await conn.send(watch("web", 0))
    await hub_holds(server, 4)
    conns[0].writer.transport.abort()
    await conns[1].close()
    conns[2].writer.write_eof()
    await hub_holds(server, 1)
    assert await asyncio.wait_for(conns[2].reader.read(), 10) == b""
    assert server.api.metrics.blocking_queries._value.get() == 1
    async with Client(server.url, token=TOKEN[0]) as client:
        await client.register(service="web", id="web-1", address="127.0.0.1", port=80)
    status, _, body = await conns[3].response()  # the one still there is answered
    assert status == 200 and json.loads(body)[0]["id"] == "web-1"
    for conn in conns[2:]:
        await conn.close()
    assert parked(server, 0)
    assert server.api.metrics.blocking_queries._value.get() == 0


async def test_the_agents_own_watches_take_the_fast_lane(server: Server) -> None:
    async with Client(server.url, token=TOKEN[0]) as client:
        served = server.fast_lane.served
        waiting = asyncio.ensure_future(client.instances("web", index=0, wait=30))
        await hub_holds(server, 1)
        await client.register(service="web", id="web-1", address="127.0.0.1", port=80)
        found, index = await waiting
        assert [i["id"] for i in found] == ["web-1"]
        assert index == server.node.machine.service_index["web"]
        assert server.fast_lane.served >= served + 1


async def test_bytes_behind_a_parked_watch_are_bounded(server: Server) -> None:
    """Reading goes on behind a parked watch (a client gone must be seen), but past one
    head's worth the watch is answered at once, the state as it is (as when its wait
    runs out), and what follows is judged as the next request (refused, and closed)."""
    conn = await RawConnection.open(server)
    try:
        timeouts = blocking_returns(server, "timeout")
        await conn.send(watch("web", 0, "&wait=600s"))
        await hub_holds(server, 1)
        conn.writer.write(b"x" * (100 * 1024))  # past one head, far below READ_HIGH
        status, headers, body = await conn.response()
        assert (status, json.loads(body), headers["X-Meshlet-Index"]) == (200, [], "0")
        assert parked(server, 0)
        assert blocking_returns(server, "timeout") == timeouts + 1
        status, headers, _ = await conn.response()
        assert status == 414 and headers["Connection"] == "close"  # a line that long
        assert await asyncio.wait_for(conn.reader.read(), 10) == b""
    finally:
        conn.writer.transport.abort()


async def test_a_client_that_reads_nothing_is_read_no_further(server: Server) -> None:
    """Answers a client does not read stop the reading of its requests: pipelined
    watches answered at once cannot make the server hold their answers without end."""
    async with Client(server.url, token=TOKEN[0]) as client:
        for n in range(50):  # a large answer
            await client.register(service="web", id=f"web-{n}", address="127.0.0.1",
                                  port=1000 + n, meta={"pad": "x" * 200})
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.setblocking(False)
    host, port = server.url.removeprefix("http://").rsplit(":", 1)
    loop = asyncio.get_running_loop()
    before = set(server.fast_lane.connections)
    await loop.sock_connect(sock, (host, int(port)))
    try:
        async def accepted() -> set[object]:
            return set(server.fast_lane.connections) - before
        lane = next(iter(await async_wait_until(accepted, 10, "the connection accepted")))
        request = watch("web", 0)
        sent = 0
        with contextlib.suppress(BlockingIOError):
            while sent < 2000:  # about 40 MB of answers, if all were made
                sock.send(request)
                sent += 1

        async def stopped() -> bool:
            return lane.write_paused and lane.paused
        await async_wait_until(stopped, 10, "reading stopped behind unread answers")
        assert lane.transport.get_write_buffer_size() < 4 * 1024 * 1024
        assert server.fast_lane.served < sent  # the rest wait unread in the socket
    finally:
        sock.close()


async def test_a_fin_while_the_watch_is_checked_parks_nothing(
        server: Server, monkeypatch: pytest.MonkeyPatch) -> None:
    """The client leaves between its watch's arrival and its parking (the read barrier
    held open here, as a slow lease check would): nothing is parked, the connection
    closes."""
    release = asyncio.Event()
    real = server.node.read_barrier

    async def held(consistency: str, max_stale: float | None) -> None:
        await release.wait()
        await real(consistency, max_stale)
    monkeypatch.setattr(server.node, "read_barrier", held)
    conn = await RawConnection.open(server)
    try:
        await conn.send(watch("web", 0))
        conn.writer.write_eof()

        async def fin_seen() -> bool:
            return any(c.eof for c in server.fast_lane.connections)
        await async_wait_until(fin_seen, 10, "the FIN seen")
        release.set()
        assert await asyncio.wait_for(conn.reader.read(), 10) == b""
        assert parked(server, 0)
        assert server.api.metrics.blocking_queries._value.get() == 0
    finally:
        conn.writer.transport.abort()


async def test_a_change_reaches_hundreds_of_watches_at_once_each_answered_once(
        server: Server) -> None:
    """Enough watches that the sends are split over threads (parallel_send): each gets
    exactly one whole answer, and each connection serves its next request."""
    count = PARALLEL_FROM + 44
    conns = [await RawConnection.open(server) for _ in range(count)]
    try:
        for conn in conns:
            await conn.send(watch("web", 0))
        await hub_holds(server, count)
        assert all(lane.fd >= 0 for lane in server.fast_lane.connections)
        served = server.fast_lane.served
        direct: list[int] = []  # sockets the answers were written straight onto
        real_send = server.fast_lane.senders.send

        def counted(fds: array[int], data: bytes) -> array[int]:
            direct.append(len(fds))
            return real_send(fds, data)
        server.fast_lane.senders.send = counted  # type: ignore[method-assign]
        async with Client(server.url, token=TOKEN[0]) as client:
            await client.register(service="web", id="web-1", address="127.0.0.1", port=80)
        answers = [await conn.response() for conn in conns]
        assert {(status, body) for status, _, body in answers} == {(200, answers[0][2])}
        assert [i["id"] for i in json.loads(answers[0][2])] == ["web-1"]
        assert server.fast_lane.served == served + count and parked(server, 0)
        assert direct == [count]
        for conn in conns[:3]:  # nothing more came on them, and they go on
            await conn.send(watch("web", 0))
            assert (await conn.response())[0] == 200
    finally:
        for conn in conns:
            await conn.close()


async def test_an_answer_the_socket_cannot_take_whole_goes_on_through_the_transport(
        server: Server) -> None:
    """The kernel takes part of a large answer (a small send buffer, a client not
    reading): the rest is queued on the transport, and the client reads it all."""
    async with Client(server.url, token=TOKEN[0]) as client:
        for n in range(60):
            await client.register(service="web", id=f"web-{n}", address="127.0.0.1",
                                  port=1000 + n, meta={"pad": "x" * 1000})
        index = server.node.machine.service_index["web"]
        before = set(server.fast_lane.connections)
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        host, port = server.url.removeprefix("http://").rsplit(":", 1)
        sock.setblocking(False)
        await asyncio.get_running_loop().sock_connect(sock, (host, int(port)))
        reader, writer = await asyncio.open_connection(sock=sock)
        conn = RawConnection(reader, writer)
        try:
            async def accepted() -> set[object]:
                return set(server.fast_lane.connections) - before
            (lane,) = await async_wait_until(accepted, 10, "the connection accepted")
            lane.transport.get_extra_info("socket").setsockopt(
                socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
            await conn.send(watch("web", index))
            await hub_holds(server, 1)
            await client.register(service="web", id="web-new", address="127.0.0.1",
                                  port=999)

            async def queued() -> bool:
                return parked(server, 0) and lane.transport.get_write_buffer_size() > 0
            await async_wait_until(queued, 10, "the rest of the answer queued")
            status, _, body = await conn.response()
            assert status == 200 and len(json.loads(body)) == 61
            assert "web-new" in {i["id"] for i in json.loads(body)}
        finally:
            await conn.close()


async def test_a_connection_already_closing_is_not_written_to(server: Server) -> None:
    """Its transport may close the socket at any moment after, so the answer goes
    to the transport, which drops it: the client sees the close and nothing else."""
    conn = await RawConnection.open(server)
    try:
        await conn.send(watch("web", 0))
        await hub_holds(server, 1)
        (lane,) = list(server.fast_lane.hub.groups["web"])  # type: ignore[union-attr]
        lane.transport.close()  # closing; connection_lost not yet called
        assert lane.transport.is_closing() and not lane.closed
        answer_watches([(lane, b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n", True)],
                       0.0, server.fast_lane)
        assert await asyncio.wait_for(conn.reader.read(), 10) == b""
    finally:
        await conn.close()


SO_TIMESTAMPNS = 35  # Linux; not in Python's socket module


def arrival(sock: socket.socket) -> tuple[int, bytes]:
    """The kernel's receive time (ns) of the first bytes of ``sock``'s answer, and them."""
    data, ancillary, _, _ = sock.recvmsg(1 << 16, socket.CMSG_SPACE(16))
    stamps = [int.from_bytes(raw[:8], "little") * 1_000_000_000
              + int.from_bytes(raw[8:16], "little")
              for level, kind, raw in ancillary
              if level == socket.SOL_SOCKET and kind == SO_TIMESTAMPNS]
    return (stamps[0] if stamps else 0), data


async def test_a_writes_answer_leaves_before_the_watches_it_wakes(server: Server) -> None:
    """A registration is acknowledged in the turn it resumes in, and its fan-out comes
    after: the write's latency does not grow with the watches it answers."""
    host, port = server.url.removeprefix("http://").rsplit(":", 1)
    socks = [socket.create_connection((host, int(port)), timeout=10) for _ in range(2)]
    watcher, writer = socks
    try:
        for sock in socks:
            sock.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
        watcher.sendall(watch("web", 0))
        await hub_holds(server, 1)
        body = json.dumps({"service": "web", "id": "web-1", "address": "127.0.0.1",
                           "port": 80}).encode()
        writer.sendall(b"PUT /v1/catalog/register HTTP/1.1\r\nHost: t\r\nX-Meshlet-Token: "
                       + TOKEN[0].encode() + b"\r\nContent-Type: application/json\r\n"
                       b"Content-Length: %d\r\n\r\n%b" % (len(body), body))
        loop = asyncio.get_running_loop()
        (acked, ack), (woken, answer) = await asyncio.gather(
            loop.run_in_executor(None, arrival, writer),
            loop.run_in_executor(None, arrival, watcher))
        assert ack.startswith(b"HTTP/1.1 200") and b'"web-1"' in answer
        assert 0 < acked < woken
    finally:
        for sock in socks:
            sock.close()

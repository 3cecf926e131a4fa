"""Request heads the sidecar's listeners and the API server refuse, over real sockets:
too large (431), too long a target (414), too slow (408), two Hosts or HTTP/0.9 (400),
CONNECT or an Upgrade (501); a chunked body's trailers and chunk lines, bounded as a
head is, both ways through the sidecar; and the API server keeps answering while
hundreds of connections that never send a head are held open against it."""

from __future__ import annotations

import asyncio
import json
import logging
import subprocess
import sys
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest
from aiohttp import web

from meshlet.http_limits import HEAD_TIMEOUT, MAX_HEAD_BYTES, MAX_HEADERS, MAX_URL_BYTES
from meshlet.proxy.config import (
    IDLE_TIMEOUT,
    MAX_CONNECTIONS,
    ClusterConfig,
    ListenerConfig,
    Snapshot,
)
from meshlet.proxy.sidecar import Sidecar
from meshlet.server.main import Server, ServerOptions
from tests.conftest import async_management_token, async_wait_until, wait_until
from tests.integration.test_durability import free_port, reachable
from tests.integration.test_proxy_http import (
    endpoint,
    fetch_metrics,
    start_backend,
    start_raw_backend,
    start_recording_backend,
    start_sidecar,
)
from tests.request_series import request_count

SLOW = 0.3  # the head timeout the tests configure, in seconds

BIG_VALUE = b"v" * (MAX_HEAD_BYTES + 1024)  # one header: a 65 KiB head
REFUSED = [
    pytest.param(b"GET / HTTP/1.1\r\nHost: x\r\n"
                 + b"".join(b"x-h%d: v\r\n" % i for i in range(MAX_HEADERS + 1)) + b"\r\n",
                 431, "head_too_large", id="101-headers"),
    pytest.param(b"GET / HTTP/1.1\r\nHost: x\r\nx-big: " + BIG_VALUE + b"\r\n\r\n",
                 431, "head_too_large", id="65KiB-head"),
    pytest.param(b"GET /" + b"u" * MAX_URL_BYTES + b" HTTP/1.1\r\nHost: x\r\n\r\n",
                 414, "url_too_long", id="long-url"),
    pytest.param(b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", 400, "bad_request",
                 id="two-hosts"),
    pytest.param(b"GET /\r\n", 400, "bad_request", id="http-0.9"),
    pytest.param(b"GET /\r\nHost: x\r\n\r\n", 400, "bad_request", id="http-0.9-headers"),
    pytest.param(b"CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\n",
                 501, "upgrade_unsupported", id="connect"),
]

# The sidecar serves this one in HTTP/1.1 (the upgrade declined, test_proxy_h2.py); the API,
# which speaks no HTTP/2, refuses it.
API_REFUSED = [*REFUSED, pytest.param(
    b"POST / HTTP/1.1\r\nHost: x\r\nConnection: Upgrade, HTTP2-Settings\r\n"
    b"Upgrade: h2c\r\nHTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA\r\n"
    b"Transfer-Encoding: chunked\r\n\r\n", 501, "upgrade_unsupported",
    id="h2c-with-a-body")]


async def exchange(port: int, data: bytes, timeout: float = 10.0) -> bytes:
    """Send ``data``, then read until the server closes the connection."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(data)
        await writer.drain()
        return await asyncio.wait_for(reader.read(), timeout)
    finally:
        writer.close()


def status_of(answer: bytes) -> int:
    return int(answer.split(b" ", 2)[1])


# -- the sidecar ---------------------------------------------------------------------


async def start_proxy(head_timeout: float, idle_timeout: float = IDLE_TIMEOUT,
                      backend: int | None = None, max_connections: int = MAX_CONNECTIONS
                      ) -> tuple[Sidecar, web.AppRunner | None]:
    runner, port = await start_backend("b0") if backend is None else (None, backend)
    snapshot = Snapshot(1, "client", "client-0",
                        (ListenerConfig("web", "outbound", "127.0.0.1", 0, "http",
                                        head_timeout=head_timeout,
                                        idle_timeout=idle_timeout,
                                        max_connections=max_connections),),
                        {"outbound:web": ClusterConfig("web", (endpoint(port),), {})})
    proxy = Sidecar(snapshot)
    await proxy.start()
    return proxy, runner


@pytest.fixture
async def proxy() -> AsyncIterator[Sidecar]:
    """A sidecar (default head timeout) whose outbound listener reaches an echo backend."""
    proxy, runner = await start_proxy(HEAD_TIMEOUT)
    yield proxy
    await proxy.stop(1)
    assert runner is not None
    await runner.cleanup()


@pytest.fixture
async def slow_proxy() -> AsyncIterator[Sidecar]:
    """The same with a head timeout of SLOW seconds."""
    proxy, runner = await start_proxy(SLOW)
    yield proxy
    await proxy.stop(1)
    assert runner is not None
    await runner.cleanup()


@pytest.fixture
async def idle_proxy() -> AsyncIterator[Sidecar]:
    """The same with an idle timeout of SLOW seconds (the head timeout left at 10 s)."""
    proxy, runner = await start_proxy(HEAD_TIMEOUT, idle_timeout=SLOW)
    yield proxy
    await proxy.stop(1)
    assert runner is not None
    await runner.cleanup()


def sidecar_port(proxy: Sidecar) -> int:
    return proxy.ports()["outbound:web"]


@pytest.mark.parametrize(("request_bytes", "status", "reason"), REFUSED)
async def test_sidecar_refuses_the_head(proxy: Sidecar,
                                        request_bytes: bytes, status: int,
                                        reason: str) -> None:
    answer = await exchange(sidecar_port(proxy), request_bytes)
    assert status_of(answer) == status, answer[:200]
    assert f"x-meshlet-error: {reason}\r\n".encode() in answer
    # Answered once, then closed (read() ended): nothing of it reached the backend.
    assert answer.count(b"HTTP/1.1 ") == 1
    # The same connection's bounds do not leak into the next one.
    ok = await exchange(sidecar_port(proxy),
                        b"GET /after HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    assert status_of(ok) == 200 and b"/after" in ok


async def test_sidecar_head_exactly_at_the_limits_is_relayed(proxy: Sidecar) -> None:
    headers = b"".join(b"x-h%d: v\r\n" % i for i in range(MAX_HEADERS - 2))
    answer = await exchange(sidecar_port(proxy), b"GET /" + b"u" * (MAX_URL_BYTES - 1)
                            + b" HTTP/1.1\r\nHost: x\r\n" + headers
                            + b"Connection: close\r\n\r\n")
    # The sidecar relayed it (the backend, aiohttp, has its own view of long lines).
    assert answer.startswith(b"HTTP/1.1 ") and b"x-meshlet-error" not in answer


async def test_sidecar_head_that_never_ends_is_refused_at_the_limit(proxy: Sidecar) -> None:
    """A header line with no end: refused as soon as 64 KiB of head have come, not at
    the head timeout (httptools would gather the line without bound)."""
    start = b"GET / HTTP/1.1\r\nHost: x\r\nx-endless: "
    answer = await exchange(sidecar_port(proxy),
                            start + b"z" * (MAX_HEAD_BYTES + 1 - len(start)))
    assert status_of(answer) == 431 and b"x-meshlet-error: head_too_large" in answer


async def test_sidecar_head_that_never_ends_after_a_request_is_refused(
        proxy: Sidecar) -> None:
    """The same after a pipelined request in the same write: counted from its next read."""
    reader, writer = await asyncio.open_connection("127.0.0.1", sidecar_port(proxy))
    try:
        writer.write(b"GET /first HTTP/1.1\r\nHost: x\r\n\r\nGET / HTTP/1.1\r\nx-endless: ")
        first = await asyncio.wait_for(reader.readuntil(b"/first"), 10)
        assert first.startswith(b"HTTP/1.1 200")
        for _ in range(MAX_HEAD_BYTES // 4096 + 1):
            writer.write(b"z" * 4096)
        await writer.drain()
        rest = await asyncio.wait_for(reader.read(), 10)
        assert b"HTTP/1.1 431" in rest
    finally:
        writer.close()


async def test_sidecar_times_out_a_slow_head(slow_proxy: Sidecar) -> None:
    answer = await exchange(sidecar_port(slow_proxy), b"GET / HTTP/1.1\r\nHost: x\r\n")
    assert status_of(answer) == 408 and b"x-meshlet-error: head_timeout" in answer


async def test_sidecar_closes_a_connection_that_sends_nothing(slow_proxy: Sidecar) -> None:
    assert await exchange(sidecar_port(slow_proxy), b"") == b""


async def test_sidecar_keeps_an_idle_connection_between_requests(
        slow_proxy: Sidecar) -> None:
    """The head timeout runs from a head's first byte: a kept-alive connection idle
    after its answer is not cut by it (it outlives several), only by the idle timeout."""
    reader, writer = await asyncio.open_connection("127.0.0.1", sidecar_port(slow_proxy))
    try:
        writer.write(b"GET /one HTTP/1.1\r\nHost: x\r\n\r\n")
        await reader.readuntil(b"\r\n\r\n")
        listener = slow_proxy.listeners[0]
        start = listener.now
        wait_until_now = start + 4 * SLOW
        while listener.now < wait_until_now:  # the ticker's clock: several sweeps
            await asyncio.sleep(0.05)
        assert listener.connections, "the idle connection was closed"
        writer.write(b"GET /two HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        rest = await asyncio.wait_for(reader.read(), 10)
        assert b"/two" in rest
    finally:
        writer.close()


async def eventually(predicate: Callable[[], bool]) -> None:
    async def check() -> bool:
        return predicate()
    await async_wait_until(check, 10)


async def test_sidecar_closes_connections_idle_between_requests(idle_proxy: Sidecar) -> None:
    """Connections that each sent one request and then sat idle were held for ever
    (1100 of them, past any head timeout): each is closed once idle_timeout passes."""
    port = sidecar_port(idle_proxy)
    clients = [await asyncio.open_connection("127.0.0.1", port) for _ in range(50)]
    try:
        for i, (_, writer) in enumerate(clients):
            writer.write(b"GET /one-%d HTTP/1.1\r\nHost: x\r\n\r\n" % i)
        for i, (reader, _) in enumerate(clients):
            answer = await asyncio.wait_for(reader.readuntil(b"/one-%d" % i), 10)
            assert answer.startswith(b"HTTP/1.1 200")
        for reader, _ in clients:  # the sidecar closes: the rest of the stream is empty
            rest = await asyncio.wait_for(reader.read(), 10)
            assert b"HTTP/1.1" not in rest
        await eventually(lambda: not idle_proxy.listeners[0].connections)
    finally:
        for _, writer in clients:
            writer.close()


async def test_the_idle_timeout_does_not_cut_a_request_in_flight() -> None:
    """A request whose answer takes longer than the idle timeout is not idle: it is
    answered, and the connection's idle time starts from that answer."""
    release = asyncio.Event()

    async def held(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        await release.wait()
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nheld")
        await writer.drain()
        await reader.read()
        writer.close()

    backend = await asyncio.start_server(held, "127.0.0.1", 0)
    proxy, _ = await start_proxy(HEAD_TIMEOUT, idle_timeout=SLOW,
                                 backend=backend.sockets[0].getsockname()[1])
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", sidecar_port(proxy))
        writer.write(b"GET /slow HTTP/1.1\r\nHost: x\r\n\r\n")
        listener = proxy.listeners[0]
        await eventually(lambda: listener.active_requests == 1)
        until = listener.now + 4 * SLOW
        await eventually(lambda: listener.now >= until)  # several sweeps
        assert listener.connections, "the connection was closed mid-request"
        release.set()
        answer = await asyncio.wait_for(reader.read(), 10)  # then closed once idle
        assert answer.startswith(b"HTTP/1.1 200") and answer.endswith(b"held")
        writer.close()
    finally:
        await proxy.stop(1)
        backend.close()


async def test_a_listener_holds_at_most_max_connections() -> None:
    """One connection beyond the cap is closed on arrival (and counted); once one of
    those held closes, a new one is served again."""
    proxy, runner = await start_proxy(HEAD_TIMEOUT, max_connections=3)
    port = sidecar_port(proxy)
    listener = proxy.listeners[0]
    held = [await asyncio.open_connection("127.0.0.1", port) for _ in range(3)]
    try:
        for i, (reader, writer) in enumerate(held):
            writer.write(b"GET /held-%d HTTP/1.1\r\nHost: x\r\n\r\n" % i)
            await asyncio.wait_for(reader.readuntil(b"/held-%d" % i), 10)
        assert len(listener.connections) == 3
        assert await exchange(port, b"GET /over HTTP/1.1\r\nHost: x\r\n\r\n") == b""
        refused = proxy.metrics.connections_refused.labels("outbound", "web")
        assert refused.value == 1
        assert listener.active_gauge.value == 3  # the refused one never counted
        held.pop()[1].close()
        await eventually(lambda: len(listener.connections) == 2)
        answer = await exchange(port, b"GET /again HTTP/1.1\r\nHost: x\r\n"
                                      b"Connection: close\r\n\r\n")
        assert status_of(answer) == 200 and b"/again" in answer
    finally:
        for _, writer in held:
            writer.close()
        await proxy.stop(1)
        assert runner is not None
        await runner.cleanup()


async def test_sidecar_does_not_time_a_head_behind_a_request_in_flight() -> None:
    """A pipelined head that is incomplete while the request before it is answered
    slowly (longer than the head timeout) is timed only from that answer on."""
    proxy, runner = await start_proxy(1.0)
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", sidecar_port(proxy))
        writer.write(b"GET /?sleep=2.5 HTTP/1.1\r\nHost: x\r\n\r\nGET /second HTTP/1.1\r\nHo")
        first = await asyncio.wait_for(reader.readuntil(b"sleep=2.5"), 10)
        assert first.startswith(b"HTTP/1.1 200")
        writer.write(b"st: x\r\nConnection: close\r\n\r\n")
        rest = await asyncio.wait_for(reader.read(), 10)
        assert b"HTTP/1.1 200" in rest and b"/second" in rest
        writer.close()
    finally:
        await proxy.stop(1)
        assert runner is not None
        await runner.cleanup()


# What follows a chunked body's first chunk ("3\r\nabc\r\n") and the filler that never
# ends it: one trailer line, trailers one after another, one chunk's extension.
ENDLESS_FRAMING = [
    pytest.param(b"0\r\nx-endless: ", b"z", id="trailer-line"),
    pytest.param(b"0\r\n", b"x-t: v\r\n", id="trailers"),
    pytest.param(b"5;ext=", b"e", id="chunk-extension"),
]


def past_the_limit(filler: bytes) -> bytes:
    return filler * (MAX_HEAD_BYTES // len(filler) + 1)


@pytest.mark.parametrize(("start", "filler"), ENDLESS_FRAMING)
async def test_sidecar_refuses_a_request_body_framing_that_never_ends(
        start: bytes, filler: bytes) -> None:
    """httptools gathers a trailer line until it ends (and llhttp skips a chunk's
    extensions, for ever): over 64 KiB, the request is answered 431 and closed, and
    the upstream never sees the request end."""
    got_body, upstream_done = asyncio.Event(), asyncio.Event()
    received = bytearray()

    async def backend(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            received.extend(await reader.readuntil(b"abc"))
            got_body.set()
            received.extend(await reader.read())  # until the sidecar lets the request go
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()
            upstream_done.set()

    server, port = await start_raw_backend(backend)
    sidecar = await start_sidecar(port)
    reader, writer = await asyncio.open_connection("127.0.0.1", sidecar.ports()["outbound:web"])
    try:
        writer.write(b"POST /upload HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n"
                     b"\r\n3\r\nabc\r\n" + start)
        await asyncio.wait_for(got_body.wait(), 10)  # so the filler comes in reads of its own
        writer.write(past_the_limit(filler))
        answer = await asyncio.wait_for(reader.read(), 10)
        assert status_of(answer) == 431, answer[:200]
        assert b"x-meshlet-error: head_too_large\r\n" in answer
        assert answer.count(b"HTTP/1.1 ") == 1 and b"connection: close" in answer
        await asyncio.wait_for(upstream_done.wait(), 10)
        assert b"0\r\n\r\n" not in received
    finally:
        writer.close()
        await sidecar.stop(1)
        server.close()


async def test_sidecar_relays_a_request_with_trailers_under_the_limit() -> None:
    runner, port, seen = await start_recording_backend()
    sidecar = await start_sidecar(port)
    try:
        answer = await exchange(sidecar.ports()["outbound:web"], (
            b"POST /upload HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n"
            b"Connection: close\r\n\r\n3;ext=" + b"e" * 4000 + b"\r\nabc\r\n0\r\n"
            + b"x-t: v\r\n" * ((MAX_HEAD_BYTES - 1024) // 8) + b"\r\n"))
        assert status_of(answer) == 200, answer[:200]
        assert [(path, body) for path, _, body in seen] == [("/upload", b"abc")]
    finally:
        await sidecar.stop(1)
        await runner.cleanup()


@pytest.mark.parametrize(("start", "filler"), ENDLESS_FRAMING)
async def test_sidecar_fails_an_upstream_whose_response_framing_never_ends(
        start: bytes, filler: bytes) -> None:
    """The same from an upstream, in a response the sidecar parses (the client's
    connection closes after it, so it is re-framed, not relayed): the upstream counts
    as failed, and the response, begun, is cut off (the 502 path)."""
    relayed = asyncio.Event()

    async def backend(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            await reader.readuntil(b"\r\n\r\n")
            writer.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
                         b"3\r\nabc\r\n" + start)
            await writer.drain()
            await relayed.wait()  # so the filler comes in reads of its own
            writer.write(past_the_limit(filler))
            await writer.drain()
            await reader.read()  # until the sidecar closes the connection
        except ConnectionError:
            pass
        finally:
            writer.close()

    server, port = await start_raw_backend(backend)
    sidecar = await start_sidecar(port)
    reader, writer = await asyncio.open_connection("127.0.0.1", sidecar.ports()["outbound:web"])
    try:
        writer.write(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        head = await asyncio.wait_for(reader.readuntil(b"abc"), 10)
        assert head.startswith(b"HTTP/1.1 200")
        relayed.set()
        rest = await asyncio.wait_for(reader.read(), 10)
        assert b"0\r\n\r\n" not in rest  # never ended: cut off
        text = await fetch_metrics(sidecar)
        assert request_count(text, code="502", destination="web", direction="outbound",
                             reason="upstream_reset") == 1
    finally:
        writer.close()
        await sidecar.stop(1)
        server.close()


def test_listener_head_timeout_is_checked() -> None:
    from meshlet.errors import ConfigError
    base = {"version": 1, "listeners": [{"name": "web", "direction": "outbound",
                                         "host": "127.0.0.1", "port": 0}]}
    assert Snapshot.from_dict(base).listeners[0].head_timeout == 10.0
    for bad in (0, -1, float("inf"), float("nan"), 1e400, "10s", True, 7200):
        listener = {**base["listeners"][0], "head_timeout": bad}  # type: ignore[index]
        with pytest.raises(ConfigError, match="head_timeout"):
            Snapshot.from_dict({**base, "listeners": [listener]})
    assert Snapshot.from_dict(base).listeners[0].idle_timeout == IDLE_TIMEOUT == 75.0
    for bad in (0, -1, float("inf"), float("nan"), 1e400, "75s", True, 7200):
        listener = {**base["listeners"][0], "idle_timeout": bad}  # type: ignore[index]
        with pytest.raises(ConfigError, match="idle_timeout"):
            Snapshot.from_dict({**base, "listeners": [listener]})
    assert Snapshot.from_dict(base).listeners[0].max_connections == MAX_CONNECTIONS
    for bad in (0, -1, 1.5, "10", True, 10 ** 7):
        listener = {**base["listeners"][0], "max_connections": bad}  # type: ignore[index]
        with pytest.raises(ConfigError, match="max_connections"):
            Snapshot.from_dict({**base, "listeners": [listener]})


# -- the API server ------------------------------------------------------------------


@pytest.fixture
async def api(tmp_path: Path) -> AsyncIterator[int]:
    server = await Server.start(tmp_path, "127.0.0.1", 0)
    yield int(server.url.rsplit(":", 1)[1])
    await server.stop()


@pytest.fixture
async def slow_api(tmp_path: Path) -> AsyncIterator[int]:
    server = await Server.start(tmp_path, "127.0.0.1", 0, ServerOptions(head_timeout=SLOW))
    yield int(server.url.rsplit(":", 1)[1])
    await server.stop()


def error_code(answer: bytes) -> str:
    return str(json.loads(answer.split(b"\r\n\r\n", 1)[1])["error"]["code"])


@pytest.mark.parametrize(("request_bytes", "status", "reason"), API_REFUSED)
async def test_api_refuses_the_head(api: int, request_bytes: bytes, status: int,
                                    reason: str) -> None:
    answer = await exchange(api, request_bytes)
    assert status_of(answer) == status, answer[:200]
    assert error_code(answer) == reason
    assert answer.count(b"HTTP/1.1 ") == 1


# aiohttp reads a later request's body before it looks at its Upgrade: not the h2c case.
LATER = [p for p in API_REFUSED
         if p.id not in ("http-0.9", "http-0.9-headers", "65KiB-head", "h2c-with-a-body")]


async def read_response(reader: asyncio.StreamReader) -> bytes:
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
    length = int(head.lower().split(b"content-length: ")[1].split(b"\r\n")[0])
    return head + await reader.readexactly(length)


@pytest.mark.parametrize(("request_bytes", "status", "reason"), LATER)
async def test_api_judges_the_later_requests_of_a_connection(
        api: int, request_bytes: bytes, status: int, reason: str) -> None:
    """Once aiohttp serves a connection, its next heads are judged by the same rules.
    Its parser refuses a 65 KiB header line and two Hosts itself (400, in its own
    words), and waits for a blank line after an HTTP/0.9 one (the head timeout)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", api)
    try:
        writer.write(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")  # open: no token
        assert status_of(await read_response(reader)) == 200
        writer.write(request_bytes)
        answer = await read_response(reader)
        assert status_of(answer) == status
        if reason != "bad_request":
            assert error_code(answer) == reason
        assert await asyncio.wait_for(reader.read(), 10) == b""  # then closed
    finally:
        writer.close()


@pytest.mark.parametrize("path", [b"/v1/status", b"/v1/kv/a"])
async def test_api_refuses_two_hosts_on_either_path(api: int, path: bytes) -> None:
    """A KV put (answered by the fast lane) and any other request (by aiohttp)."""
    answer = await exchange(api, b"PUT " + path + b" HTTP/1.1\r\nHost: a\r\nHost: b\r\n"
                                 b"Content-Length: 1\r\n\r\nx")
    assert status_of(answer) == 400 and error_code(answer) == "bad_request"


async def test_api_times_out_a_slow_head(slow_api: int) -> None:
    answer = await exchange(slow_api, b"GET /v1/status HTTP/1.1\r\nHost: x\r\n")
    assert status_of(answer) == 408 and error_code(answer) == "head_timeout"
    assert await exchange(slow_api, b"") == b""  # nothing sent: closed without an answer


async def test_api_times_out_an_idle_connection_after_its_answer(slow_api: int) -> None:
    """Once aiohttp has the connection, its keep-alive timeout is the head timeout."""
    reader, writer = await asyncio.open_connection("127.0.0.1", slow_api)
    try:
        writer.write(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")  # open: no token
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
        length = int(head.lower().split(b"content-length: ")[1].split(b"\r\n")[0])
        await reader.readexactly(length)
        assert await asyncio.wait_for(reader.read(), 10) == b""  # closed by the server
    finally:
        writer.close()


# `meshlet server` with its descriptor limit lowered first (lowering needs no privilege).
LIMITED_SERVER = ("import resource, runpy, sys; "
                  "resource.setrlimit(resource.RLIMIT_NOFILE, (256, 256)); "
                  "sys.argv = ['meshlet', *sys.argv[1:]]; "
                  "runpy.run_module('meshlet', run_name='__main__')")


async def test_api_answers_while_hundreds_of_half_open_connections_are_held(
        tmp_path: Path) -> None:
    """A server limited to 256 descriptors, 300 connections that send half a head or
    nothing: it still answers a real request at once, and still writes its log."""
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-c", LIMITED_SERVER, "server", "--data-dir", str(tmp_path),
         "--http", f"127.0.0.1:{port}"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    held: list[asyncio.StreamWriter] = []
    try:
        wait_until(lambda: reachable(port), 15, message="the server to listen")
        for i in range(300):
            _, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(b"GET /v1/status HTTP/1.1\r\nHost: x\r\n" if i % 2 else b"")
            held.append(writer)
        answer = await exchange(port, b"PUT /v1/kv/still-here HTTP/1.1\r\nHost: x\r\n"
                                      b"Content-Length: 2\r\nConnection: close\r\n\r\nok")
        # 200, or 401/403 where API tokens are required: either way an answer.
        assert status_of(answer) in (200, 401, 403), answer[:200]
        assert proc.poll() is None
    finally:
        for writer in held:
            writer.close()
        proc.terminate()
        proc.wait(10)


# -- bodies, idle connections and the connection limit (the API server) -------------


async def token_server(tmp_path: Path, options: ServerOptions) -> tuple[Server, int, bytes]:
    """A started server, its port, and its management token as a header line."""
    server = await Server.start(tmp_path, "127.0.0.1", 0, options)
    await async_management_token(tmp_path)
    header = b"X-Meshlet-Token: " + (server.acl.token() or "").encode() + b"\r\n"
    return server, int(server.url.rsplit(":", 1)[1]), header


def put_head(token: bytes, length: int, key: bytes = b"k") -> bytes:
    return (b"PUT /v1/kv/" + key + b" HTTP/1.1\r\nHost: x\r\n" + token
            + b"Content-Length: %d\r\n\r\n" % length)


def post_head(token: bytes, length: int) -> bytes:
    return (b"POST /v1/containers HTTP/1.1\r\nHost: x\r\n" + token
            + b"Content-Type: application/json\r\nContent-Length: %d\r\n\r\n{" % length)


async def until(predicate: Callable[[], object], message: str) -> None:
    async def check() -> object:
        return predicate()
    await async_wait_until(check, message=message)


def owing_bodies(server: Server) -> int:
    """Connections, on either path, whose head has come and whose body has not."""
    return sum(1 for conn in server.fast_lane.guard.waiting
               if getattr(conn, "in_body", False) or getattr(conn, "body", None) is not None)


async def test_api_bodies_that_never_end_cannot_fill_the_connection_limit(
        tmp_path: Path) -> None:
    """16 connections, the limit, each sending a head and never its body (half a KV put
    on the fast lane, half a POST aiohttp reads): a new client is still answered, by
    closing the one that has waited longest."""
    server, port, token = await token_server(
        tmp_path, ServerOptions(head_timeout=60, max_connections=16))
    held: list[asyncio.StreamWriter] = []
    try:
        for i in range(16):
            _, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(put_head(token, 1000) if i % 2 else post_head(token, 1000))
            held.append(writer)
        await until(lambda: owing_bodies(server) == 16, "16 connections to owe their body")
        answer = await exchange(port, put_head(token, 2, b"probe").replace(
            b"\r\n\r\n", b"\r\nConnection: close\r\n\r\n") + b"ok")
        assert status_of(answer) == 200, answer[:200]
        assert server.fast_lane.guard.evicted == 1
    finally:
        for writer in held:
            writer.close()
        await server.stop()


@pytest.mark.parametrize("head", ["fast-lane", "aiohttp"])
async def test_api_times_out_a_body_that_never_ends(tmp_path: Path, head: str) -> None:
    server, port, token = await token_server(tmp_path, ServerOptions(head_timeout=SLOW))
    try:
        request = put_head(token, 1000) + b"x" if head == "fast-lane" else post_head(token, 1000)
        answer = await exchange(port, request)
        assert status_of(answer) == 408 and error_code(answer) == "body_timeout", answer
        stored = await exchange(port, b"GET /v1/kv/k HTTP/1.1\r\nHost: x\r\n" + token
                                + b"Connection: close\r\n\r\n")
        assert status_of(stored) == 404
    finally:
        await server.stop()


async def test_api_closes_an_idle_aiohttp_connection_to_make_room(tmp_path: Path) -> None:
    """Connections aiohttp serves, idle after their answer, wait for a head as the fast
    lane's do: at the limit the one idle longest is closed for a new client."""
    server, port, _ = await token_server(
        tmp_path, ServerOptions(head_timeout=60, max_connections=2))
    idle: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = []
    try:
        for _ in range(2):
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
            assert status_of(await read_response(reader)) == 200
            idle.append((reader, writer))
        answer = await exchange(port, b"GET /metrics HTTP/1.1\r\nHost: x\r\n"
                                      b"Connection: close\r\n\r\n")
        assert status_of(answer) == 200, answer[:200]
        assert await asyncio.wait_for(idle[0][0].read(), 10) == b""  # the oldest, closed
    finally:
        for _, writer in idle:
            writer.close()
        await server.stop()


SMUGGLED = (b"PUT /v1/kv/k HTTP/1.1\r\nHost: a\r\n%bX: y\nTransfer-Encoding: chunked\r\n"
            b"Content-Length: 4\r\nConnection: close\r\n\r\n0\r\n\r\n")


@pytest.mark.parametrize("path", ["fast-lane", "aiohttp"])
async def test_api_refuses_a_bare_lf_in_a_head(tmp_path: Path, path: str) -> None:
    """``X: y\\nTransfer-Encoding: chunked`` is refused on either path; nothing stored."""
    server, port, token = await token_server(tmp_path, ServerOptions())
    try:
        request = SMUGGLED % token
        if path == "fast-lane":
            answer = await exchange(port, request)
        else:
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            try:
                writer.write(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")  # to aiohttp
                assert status_of(await read_response(reader)) == 200
                writer.write(request)
                answer = await asyncio.wait_for(reader.read(), 10)
            finally:
                writer.close()
        assert status_of(answer) == 400, answer[:200]
        stored = await exchange(port, b"GET /v1/kv/k HTTP/1.1\r\nHost: x\r\n" + token
                                + b"Connection: close\r\n\r\n")
        assert status_of(stored) == 404
    finally:
        await server.stop()


async def test_api_does_not_log_an_error_for_a_client_gone_mid_body(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="meshlet.api.routes")
    server, port, token = await token_server(tmp_path, ServerOptions())
    try:
        _, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(post_head(token, 1000))
        await until(lambda: owing_bodies(server) == 1, "the POST to owe its body")
        writer.transport.abort()  # gone, mid-body
        await until(lambda: any(r.name == "meshlet.api.routes" for r in caplog.records),
                    "the API to notice the client is gone")
        assert not [r for r in caplog.records if r.levelno >= logging.ERROR]
    finally:
        await server.stop()

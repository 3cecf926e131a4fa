"""The sidecar passes on exactly the response to the request it sent, however the
upstream's bytes are cut into reads: a head split over two reads arrives whole, a 1xx
arrives before the answer, and bytes past the response's end never reach a client and
retire the connection they came on.

Each test runs twice per loop: with a keep-alive client, whose responses the sidecar
relays as received, and with ``Connection: close``, whose responses it parses and
rebuilds."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from typing import Any

import pytest

from meshlet.http_limits import MAX_HEAD_BYTES
from tests.conftest import async_wait_until
from tests.integration.test_proxy_http import start_raw_backend, start_sidecar

BOTH_LOOPS = True
RELAYED, REBUILT = "keep-alive", "close"
NEXT = b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nnext"  # any later request's answer
EVIL = b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nevil"  # never asked for
CLOSE = b""  # in a script: the backend closes the connection here
READ_LIMIT = 1 << 20
DEADLINE = 10.0


@dataclass
class ScriptedBackend:
    """Answers the first request on its first connection with ``parts``, each written
    on its own once the sidecar has had the loop to read the one before; every other
    request gets ``NEXT``."""

    parts: Sequence[bytes]
    connections: int = 0
    port: int = 0

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        first = self.connections == 1
        try:
            while True:
                await reader.readuntil(b"\r\n\r\n")
                if first:
                    first = False
                    for part in self.parts:
                        if part == CLOSE:
                            return
                        writer.write(part)
                        await writer.drain()
                        for _ in range(5):  # loopback delivers at once: the sidecar reads it
                            await asyncio.sleep(0)
                else:
                    writer.write(NEXT)
                    await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()


@contextlib.asynccontextmanager
async def proxied(*parts: bytes, **settings: Any) -> AsyncIterator[tuple[ScriptedBackend, int]]:
    """A backend scripted with ``parts`` behind a sidecar with ``settings``: the backend
    and the sidecar's port. With retries on, a second backend that answers every
    request ``NEXT`` is the one a retry goes to."""
    backends = [ScriptedBackend(parts)]
    if settings.get("retries"):
        backends.append(ScriptedBackend((NEXT,)))
    servers = []
    for backend in backends:
        server, backend.port = await start_raw_backend(backend.handle)
        servers.append(server)
    sidecar = await start_sidecar(*(b.port for b in backends), **settings)
    try:
        yield backends[0], sidecar.ports()["outbound:web"]
    finally:
        await sidecar.stop(1)
        for server in servers:
            server.close()


def request(mode: str, method: str = "GET") -> bytes:
    return f"{method} / HTTP/1.1\r\nHost: x\r\nConnection: {mode}\r\n\r\n".encode()


async def exchange(port: int, mode: str, method: str = "GET") -> bytes:
    """Send one request; with keep-alive, then a second on the same connection and read
    until its answer ends; with close, read until the sidecar closes."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(request(mode, method))
        if mode == RELAYED:
            writer.write(request(mode))
        out = b""
        while not (mode == RELAYED and out.endswith(b"\r\n\r\nnext")
                   and out.count(b"HTTP/1.1 2") == 2):
            chunk = await asyncio.wait_for(reader.read(READ_LIMIT), DEADLINE)
            if not chunk:
                break
            out += chunk
        return out
    finally:
        writer.close()


def answer_of(out: bytes, mode: str) -> bytes:
    """The first answer, and that the second (with keep-alive) followed it untouched."""
    if mode == REBUILT:
        return out
    assert out.endswith(b"\r\n\r\nnext"), out
    first, _, second = out.rpartition(b"HTTP/1.1 200 OK\r\n")
    assert second.lower().startswith(b"content-length: 4\r\n"), out
    return first


def body_of(answer: bytes) -> bytes:
    return answer.split(b"\r\n\r\n", 1)[1]


MODES = pytest.mark.parametrize("mode", [RELAYED, REBUILT])


INTERIM = b"HTTP/1.1 100 Continue\r\n\r\n"
SPLIT_HEAD = b"HTTP/1.1 201 Created\r\nContent-Le", b"ngth: 4\r\nX-Split: yes\r\n\r\ndone"
WHOLE = b"".join(SPLIT_HEAD)
ARRIVALS = {
    "a head split over two reads": (b"", SPLIT_HEAD),
    "a 100 Continue, then the answer": (INTERIM, (INTERIM, WHOLE)),
    "a 100 Continue and the answer in one read": (INTERIM, (INTERIM + WHOLE,)),
    "a 100 Continue, then a split head": (INTERIM, (INTERIM + SPLIT_HEAD[0], SPLIT_HEAD[1])),
    "103 Early Hints with its headers": (
        b"HTTP/1.1 103 Early Hints\r\nLink: </a.css>; rel=preload\r\n\r\n",
        (b"HTTP/1.1 103 Early Hints\r\nLink: </a.css>; rel=preload\r\n\r\n", WHOLE)),
}


@MODES
@pytest.mark.parametrize("case", list(ARRIVALS.values()), ids=list(ARRIVALS))
async def test_every_part_of_an_answer_arrives_however_its_reads_fall(
        mode: str, case: tuple[bytes, tuple[bytes, ...]]) -> None:
    interim, parts = case
    async with proxied(*parts) as (_, port):
        answer = answer_of(await exchange(port, mode), mode)
        assert answer.startswith(interim + b"HTTP/1.1 201 Created\r\n"), answer
        assert b"x-split: yes\r\n" in answer.lower()
        assert body_of(answer[len(interim):]) == b"done"


TRAILING = {
    "a second response": b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok" + EVIL,
    "a second response after a chunked body":
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n" + EVIL,
    "bytes that are no response": b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nokGARBAGE",
}


@MODES
@pytest.mark.parametrize("read", list(TRAILING.values()), ids=list(TRAILING))
async def test_bytes_past_the_answer_never_reach_a_client_and_retire_the_connection(
        mode: str, read: bytes) -> None:
    async with proxied(read) as (backend, port):
        out = await exchange(port, mode)
        answer = answer_of(out, mode)
        assert answer.startswith(b"HTTP/1.1 200 OK\r\n"), out
        assert body_of(answer) in (b"ok", b"2\r\nok\r\n0\r\n\r\n"), out
        assert b"evil" not in out and b"GARBAGE" not in out
        # The connection they came on is not reused: the next request opens another.
        assert body_of(answer_of(await exchange(port, mode), mode)) == b"next"
        assert backend.connections >= 2


async def test_bytes_past_an_answer_that_spans_reads_cut_the_relayed_answer_off() -> None:
    """Part of a relayed answer is out before its end shows what follows it: the client
    is told by the connection's close, and gets none of the bytes that followed."""
    parts = b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nok", b"ok" + EVIL
    async with proxied(*parts) as (_, port):
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(request(RELAYED))
        out = b""
        while chunk := await asyncio.wait_for(reader.read(READ_LIMIT), DEADLINE):
            out += chunk
        writer.close()
        assert out.startswith(b"HTTP/1.1 200 OK\r\n") and b"evil" not in out, out
        assert len(body_of(out)) < 4  # short of its length: the client knows it was cut


@MODES
async def test_a_body_after_an_answer_to_head_never_reaches_a_client(
        mode: str) -> None:
    async with proxied(EVIL) as (backend, port):
        out = await exchange(port, mode, "HEAD")
        answer = answer_of(out, mode)
        assert answer.startswith(b"HTTP/1.1 200 OK\r\n") and body_of(answer) == b"", out
        assert b"evil" not in out
        assert body_of(answer_of(await exchange(port, mode), mode)) == b"next"
        assert backend.connections >= 2


async def test_an_http_1_0_client_gets_no_interim_answer() -> None:
    async with proxied(INTERIM, WHOLE) as (_, port):
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"GET / HTTP/1.0\r\nHost: x\r\n\r\n")
        out = await asyncio.wait_for(reader.read(READ_LIMIT), DEADLINE)
        while chunk := await asyncio.wait_for(reader.read(READ_LIMIT), DEADLINE):
            out += chunk
        writer.close()
        assert out.startswith(b"HTTP/1.1 201 Created\r\n") and out.endswith(b"done"), out


UNASKED = {
    "101 with Upgrade headers": [b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: x\r\n"
                                 b"Connection: upgrade\r\n\r\n"],
    "101 bare": [b"HTTP/1.1 101 Switching Protocols\r\n\r\n"],
    "a head that never ends": [b"HTTP/1.1 200 OK\r\n"] + [b"X-Line: " + b"v" * 1000 + b"\r\n"] * (
        MAX_HEAD_BYTES // 1000 + 16),
}


@MODES
@pytest.mark.parametrize("parts", list(UNASKED.values()), ids=list(UNASKED))
async def test_an_answer_no_request_could_take_is_a_502(mode: str, parts: list[bytes]) -> None:
    """A 101 to a request that asked for no upgrade, or a head past 64 KiB: the upstream
    failed, and the client is told so, whole."""
    async with proxied(*parts) as (_, port):
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(request(mode))
        out = await asyncio.wait_for(reader.readuntil(b"upstream_reset\n"), DEADLINE)
        writer.close()
        assert out.startswith(b"HTTP/1.1 502 "), out


@MODES
async def test_a_body_that_ends_at_the_close_ends_for_the_client_too(mode: str) -> None:
    """No length and not chunked, its head split: rebuilt as chunked, and the upstream's
    close writes the last chunk."""
    parts = b"HTTP/1.1 200 OK\r\nContent-", b"Type: text/plain\r\n\r\nall of it", CLOSE
    async with proxied(*parts) as (_, port):
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(request(mode))
        out = await asyncio.wait_for(reader.readuntil(b"0\r\n\r\n"), DEADLINE)
        writer.close()
        assert out.startswith(b"HTTP/1.1 200 OK\r\n") and b"\r\n9\r\nall of it\r\n" in out


RETRIED = {
    "HEAD answered 503 with a length":
        ("HEAD", [b"HTTP/1.1 503 Busy\r\nContent-Length: 20\r\n\r\n"]),
    "503, then its body and bytes past it": (
        "GET", [b"HTTP/1.1 503 Busy\r\nContent-Length: 4\r\n\r\n", b"busy" + EVIL]),
    "503 whose body ends at the close": ("GET", [b"HTTP/1.1 503 Busy\r\n\r\nbusy", CLOSE]),
}


@MODES
@pytest.mark.parametrize("case", list(RETRIED.values()), ids=list(RETRIED))
async def test_an_answer_to_retry_is_retried_however_it_ends(
        mode: str, case: tuple[str, list[bytes]]) -> None:
    method, parts = case
    async with proxied(*parts, retries=1, retry_on=[503]) as (backend, port):
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(request(mode, method))
        out = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), DEADLINE)
        writer.close()
        assert out.startswith(b"HTTP/1.1 200 OK\r\n"), out  # the other backend's
        assert backend.connections == 1


async def test_a_client_held_back_by_an_upstreams_full_buffer_is_read_again() -> None:
    """The upstream answers a large POST without reading its body, once the sidecar
    stopped reading the client to wait for the upstream's buffer: when the exchange
    ends, the client's connection is read again, and its next request answered."""
    answer_now = asyncio.Event()
    connections = []

    async def early(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        connections.append(writer)
        head = await reader.readuntil(b"\r\n\r\n")
        if head.startswith(b"POST"):
            await answer_now.wait()
            writer.write(b"HTTP/1.1 413 Too Large\r\nContent-Length: 3\r\n\r\nbig")
            await writer.drain()
            return  # and never reads the body: the sidecar closes this connection
        writer.write(NEXT)
        await writer.drain()
    server, backend = await start_raw_backend(early)
    sidecar = await start_sidecar(backend)
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", sidecar.ports()["outbound:web"])
        size = 64 << 20
        writer.write(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n" % size)
        writer.write(b"x" * (8 << 20))  # more than every buffer between here and there

        async def held_back() -> bool:
            return any("upstream_buffer" in down.read_pauses
                       for listener in sidecar.listeners for down in listener.connections)
        await async_wait_until(held_back, DEADLINE, "the client's reads paused")
        answer_now.set()
        out = await asyncio.wait_for(reader.readuntil(b"big"), DEADLINE)
        assert out.startswith(b"HTTP/1.1 413 "), out

        async def read_again() -> bool:
            return not any(down.read_pauses for listener in sidecar.listeners
                           for down in listener.connections)
        await async_wait_until(read_again, DEADLINE, "the client's connection read again")
        writer.close()
    finally:
        await sidecar.stop(1)
        for held in connections:
            held.close()
        server.close()

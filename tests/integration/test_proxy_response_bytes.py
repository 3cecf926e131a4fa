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

import pytest

from tests.integration.test_proxy_http import start_raw_backend, start_sidecar

BOTH_LOOPS = True
RELAYED, REBUILT = "keep-alive", "close"
NEXT = b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nnext"  # any later request's answer
EVIL = b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nevil"  # never asked for
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
async def proxied(*parts: bytes) -> AsyncIterator[tuple[ScriptedBackend, int]]:
    """A backend scripted with ``parts`` behind a sidecar: it and the sidecar's port."""
    backend = ScriptedBackend(parts)
    server, backend.port = await start_raw_backend(backend.handle)
    sidecar = await start_sidecar(backend.port)
    try:
        yield backend, sidecar.ports()["outbound:web"]
    finally:
        await sidecar.stop(1)
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

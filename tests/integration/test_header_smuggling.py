"""A header value holding CRLF cannot smuggle a second request into the app behind a
sidecar: a snapshot carrying one is refused whole, and the app keeps receiving exactly
the requests that were sent, with the rewrite in force before."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import aiohttp
import pytest

from meshlet.errors import ConfigError
from meshlet.proxy.config import ClusterConfig, Endpoint, ListenerConfig, Snapshot
from meshlet.proxy.sidecar import Sidecar

SMUGGLED = "alice\r\nContent-Length: 0\r\n\r\nGET /admin HTTP/1.1\r\nHost: app"


class RecordingApp:
    """A raw HTTP/1.1 app that records the head of every request it reads."""

    def __init__(self) -> None:
        self.heads: list[bytes] = []
        self.server: asyncio.Server | None = None

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                self.heads.append(await reader.readuntil(b"\r\n\r\n"))
                writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    async def start(self) -> int:
        self.server = await asyncio.start_server(self.handle, "127.0.0.1", 0)
        return int(self.server.sockets[0].getsockname()[1])


def snapshot(version: int, port: int, value: str) -> Snapshot:
    settings = {"routes": [{"request_headers": {"set": {"x-user": value}}}]}
    return Snapshot(version, "client", "client-0",
                    (ListenerConfig("web", "outbound", "127.0.0.1", 0, "http"),),
                    {"outbound:web": ClusterConfig(
                        "web", (Endpoint(f"app-{port}", "127.0.0.1", port),), settings)})


@pytest.fixture
async def app() -> AsyncIterator[RecordingApp]:
    recording = RecordingApp()
    await recording.start()
    yield recording
    assert recording.server is not None
    recording.server.close()
    await recording.server.wait_closed()


async def test_a_crlf_header_value_is_refused_and_smuggles_nothing(app: RecordingApp) -> None:
    assert app.server is not None
    port = int(app.server.sockets[0].getsockname()[1])
    sidecar = Sidecar(snapshot(1, port, "alice"))
    await sidecar.start()
    try:
        with pytest.raises(ConfigError, match="CR, LF, NUL") as info:
            sidecar.apply(snapshot(2, port, SMUGGLED))
        assert info.value.field == "routes.0.request_headers.set"
        assert sidecar.snapshot.version == 1
        address = f"http://127.0.0.1:{sidecar.ports()['outbound:web']}/orders"
        async with aiohttp.ClientSession() as session:
            for _ in range(2):
                async with session.get(address) as resp:
                    assert resp.status == 200 and await resp.read() == b"ok"
        assert len(app.heads) == 2
        for head in app.heads:
            assert head.startswith(b"GET /orders HTTP/1.1\r\n")
            assert b"\r\nx-user: alice\r\n" in head
            assert b"/admin" not in head
    finally:
        await sidecar.stop()


async def test_a_sidecar_given_one_at_start_refuses_to_start() -> None:
    sidecar = Sidecar(snapshot(1, 9, SMUGGLED))
    with pytest.raises(ConfigError, match="CR, LF, NUL"):
        await sidecar.start()
    assert sidecar.listeners == []  # nothing bound, nothing to clean up

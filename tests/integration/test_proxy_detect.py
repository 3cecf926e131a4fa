"""Protocol detection on an HTTP listener, against real sockets: a client that speaks
first in something else than HTTP (TLS of its own, a binary protocol) and a server that
speaks first (a banner) are relayed as bytes; HTTP stays HTTP; where a rule needs HTTP
to judge (a rate limit, L7 intentions) nothing but HTTP passes; a `tcp` listener never
waits for the client."""

from __future__ import annotations

import asyncio
import socket
import ssl
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from meshlet.errors import ConfigError
from meshlet.proxy.config import ClusterConfig, ListenerConfig, Snapshot, listener_from_dict
from meshlet.proxy.sidecar import Sidecar
from tests.integration.test_proxy_http import endpoint, start_backend, start_raw_backend
from tests.mesh_certs import MeshCa


async def banner_then_echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """A server-speaks-first protocol (SMTP's shape): a greeting, then each line back."""
    writer.write(b"220 ready\r\n")
    await writer.drain()
    while line := await reader.readline():
        writer.write(b"echo " + line)
        await writer.drain()
    writer.write(b"bye\r\n")  # after the client's half-close
    await writer.drain()
    writer.close()


async def sidecar_for(port: int, protocol: str = "http", direction: str = "outbound",
                      detect_timeout: float = 0.2, head_timeout: float = 10.0,
                      **settings: object) -> Sidecar:
    name = "web"
    snapshot = Snapshot(1, "client" if direction == "outbound" else name, "x-0",
                        (ListenerConfig(name, direction, "127.0.0.1", 0, protocol,
                                        head_timeout=head_timeout,
                                        detect_timeout=detect_timeout),),
                        {f"{direction}:{name}": ClusterConfig(name, (endpoint(port),),
                                                              dict(settings))})
    sidecar = Sidecar(snapshot)
    await sidecar.start()
    return sidecar


@pytest.fixture
async def banner() -> AsyncIterator[int]:
    server, port = await start_raw_backend(banner_then_echo)
    yield port
    server.close()


async def talk(port: int) -> tuple[bytes, bytes, bytes]:
    """Read the greeting, send a line, read its echo, half-close, read the goodbye."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        greeting = await asyncio.wait_for(reader.readline(), 10)
        writer.write(b"HELO mesh\r\n")
        echo = await asyncio.wait_for(reader.readline(), 10)
        writer.write_eof()
        rest = await asyncio.wait_for(reader.read(), 10)
        return greeting, echo, rest
    finally:
        writer.close()


async def test_a_server_that_speaks_first_is_relayed_after_the_detect_timeout(
        banner: int) -> None:
    sidecar = await sidecar_for(banner)
    try:
        port = sidecar.ports()["outbound:web"]
        assert await talk(port) == (b"220 ready\r\n", b"echo HELO mesh\r\n", b"bye\r\n")
        listener = sidecar.listeners[0]
        deadline = asyncio.get_running_loop().time() + 10
        while listener.active_requests or listener.connections:
            assert asyncio.get_running_loop().time() < deadline, "the relay lingers"
            await asyncio.sleep(0.01)
    finally:
        await sidecar.stop(1)


async def test_a_relay_where_neither_side_speaks_ends_at_the_head_timeout() -> None:
    """Taken for a server that speaks first, a connection whose server says nothing
    either is not one: it holds its upstream for the head timeout, not the idle one."""
    async def mute(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read()

    server, port = await start_raw_backend(mute)
    sidecar = await sidecar_for(port, head_timeout=1.0)  # idle_timeout: the default 75 s
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1",
                                                       sidecar.ports()["outbound:web"])
        assert await asyncio.wait_for(reader.read(), 10) == b""  # closed, long before 75 s
        writer.close()
    finally:
        await sidecar.stop(1)
        server.close()


async def test_a_tcp_listener_never_waits_for_the_client(banner: int) -> None:
    # Were it to wait, the greeting would come after an hour: talk() gives up at 10 s.
    sidecar = await sidecar_for(banner, protocol="tcp", detect_timeout=3600,
                                head_timeout=3600)
    try:
        greeting, _, _ = await talk(sidecar.ports()["outbound:web"])
        assert greeting == b"220 ready\r\n"
    finally:
        await sidecar.stop(1)


async def test_a_binary_protocol_that_speaks_first_is_relayed_at_once() -> None:
    async def resp(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        assert await reader.readexactly(14) == b"*1\r\n$4\r\nPING\r\n"
        writer.write(b"+PONG\r\n")
        await writer.drain()
        writer.close()

    server, port = await start_raw_backend(resp)
    sidecar = await sidecar_for(port, detect_timeout=3600, head_timeout=3600)
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1",
                                                       sidecar.ports()["outbound:web"])
        writer.write(b"*1\r\n$4\r\nPING\r\n")  # Redis's protocol: no HTTP method
        assert await asyncio.wait_for(reader.read(), 10) == b"+PONG\r\n"
        writer.close()
    finally:
        await sidecar.stop(1)
        server.close()


async def test_tls_of_the_apps_own_passes_through(tmp_path: Path) -> None:
    ca = MeshCa.make(tmp_path)
    cert, key = ca.leaf("web")
    server_tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_tls.load_cert_chain(str(cert), str(key))

    async def tls_echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"secret: " + await reader.readline())
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(tls_echo, "127.0.0.1", 0, ssl=server_tls)
    sidecar = await sidecar_for(server.sockets[0].getsockname()[1])
    try:
        client_tls = ssl.create_default_context(cafile=str(ca.roots_file))
        client_tls.check_hostname = False
        reader, writer = await asyncio.open_connection(
            "127.0.0.1", sidecar.ports()["outbound:web"], ssl=client_tls)
        writer.write(b"hello\n")
        assert await asyncio.wait_for(reader.read(), 10) == b"secret: hello\n"
        writer.close()
    finally:
        await sidecar.stop(1)
        server.close()


async def test_http_is_still_http(banner: int) -> None:
    runner, port = await start_backend("b0")
    sidecar = await sidecar_for(port)
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1",
                                                       sidecar.ports()["outbound:web"])
        writer.write(b"\r\nGET /x HTTP/1.1\r\nHost: web\r\nConnection: close\r\n\r\n")
        answer = await asyncio.wait_for(reader.read(), 10)
        assert answer.startswith(b"HTTP/1.1 200") and b'"path": "/x"' in answer
        writer.close()
    finally:
        await sidecar.stop(1)
        await runner.cleanup()


async def test_where_a_rule_needs_http_nothing_else_passes(banner: int) -> None:
    """A rate limit judges requests: bytes that are not HTTP would pass uncounted."""
    sidecar = await sidecar_for(banner, direction="inbound", head_timeout=1.0,
                                rate_limit_rps=1000)
    port = sidecar.ports()["inbound:web"]
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"*1\r\n$4\r\nPING\r\n")
        answer = await asyncio.wait_for(reader.read(), 10)
        assert answer.startswith(b"HTTP/1.1 400") and b"bad_request" in answer
        writer.close()
        # A silent client waits for HTTP until the head timeout, and hears no banner.
        with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
            assert await asyncio.to_thread(sock.recv, 100) == b""
    finally:
        await sidecar.stop(1)


def test_the_detect_timeout_is_validated() -> None:
    base = {"name": "web", "direction": "outbound", "host": "127.0.0.1", "port": 0}
    assert listener_from_dict(base).detect_timeout == 5.0
    assert listener_from_dict({**base, "detect_timeout": 0.5}).detect_timeout == 0.5
    for bad in (0, -1, "1s", True, 1e9):
        with pytest.raises(ConfigError, match="detect_timeout"):
            listener_from_dict({**base, "detect_timeout": bad})

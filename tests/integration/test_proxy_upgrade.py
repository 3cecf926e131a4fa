"""WebSocket and other HTTP/1.1 upgrades through real sidecars, with the `websockets`
library on both ends: the handshake is relayed and after the 101 the frames flow both
ways (through two sidecars in mutual TLS as well), large messages pass with
back-pressure, a declined upgrade is an ordinary response, an idle tunnel is closed,
closing either side closes the other, and CONNECT is refused (`Upgrade: h2c` is HTTP/2:
test_proxy_h2.py)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from dataclasses import replace
from pathlib import Path

import pytest
import websockets
from websockets.asyncio.client import connect
from websockets.asyncio.server import ServerConnection, serve

from meshlet.observe.exposition import render
from meshlet.proxy.config import ClusterConfig, ListenerConfig, Snapshot
from meshlet.proxy.sidecar import Sidecar
from tests.conftest import async_wait_until
from tests.integration.test_proxy_http import (
    endpoint,
    raw_exchange,
    start_backend,
    start_raw_backend,
)
from tests.integration.test_proxy_mtls import caller_snapshot, destination_snapshot, with_intentions
from tests.mesh_certs import MeshCa
from tests.request_series import request_count

Echo = tuple[websockets.asyncio.server.Server, int, list[ServerConnection]]


@pytest.fixture
async def echo() -> AsyncIterator[Echo]:
    """A WebSocket server that echoes every message, prefixed with the path it was
    reached on; it keeps its connections so a test can see them end."""
    connections: list[ServerConnection] = []

    async def handler(ws: ServerConnection) -> None:
        connections.append(ws)
        path = ws.request.path if ws.request is not None else "?"
        async for message in ws:
            await ws.send(f"{path} {message}" if isinstance(message, str) else message)

    server = await serve(handler, "127.0.0.1", 0, max_size=None)
    port = server.sockets[0].getsockname()[1]  # type: ignore[index]
    yield server, port, connections
    server.close()
    await server.wait_closed()


async def sidecar_to(*ports: int, idle_timeout: float = 75.0) -> Sidecar:
    snapshot = Snapshot(1, "client", "client-0",
                        (ListenerConfig("web", "outbound", "127.0.0.1", 0,
                                        idle_timeout=idle_timeout),),
                        {"outbound:web": ClusterConfig("web", tuple(endpoint(p) for p in ports),
                                                       {})})
    sidecar = Sidecar(snapshot)
    await sidecar.start()
    return sidecar


@pytest.fixture
async def proxied(echo: Echo) -> AsyncIterator[Sidecar]:
    """A sidecar whose upstream ``web`` is the echo server."""
    sidecar = await sidecar_to(echo[1])
    yield sidecar
    await sidecar.stop(1)


async def settled(predicate: Callable[[], bool], what: str) -> None:
    async def check() -> bool:
        return predicate()
    await async_wait_until(check, 10, what)


def ws_url(sidecar: Sidecar, path: str = "/chat") -> str:
    return f"ws://127.0.0.1:{sidecar.ports()['outbound:web']}{path}"


async def test_messages_flow_both_ways_after_the_101(echo: Echo, proxied: Sidecar) -> None:
    async with connect(ws_url(proxied), max_size=None) as ws:
        for i in range(20):
            await ws.send(f"hello {i}")
            assert await asyncio.wait_for(ws.recv(), 10) == f"/chat hello {i}"
        big = bytes(range(256)) * 8192  # 2 MiB each way: more than any buffer
        await ws.send(big)
        assert await asyncio.wait_for(ws.recv(), 30) == big
    text = render(proxied.metrics.registry).decode()
    assert request_count(text, code="101", response_class="1xx", source="client",
                         destination="web", destination_instance=f"b-{echo[1]}",
                         reason="") == 1
    await settled(lambda: proxied.listeners[0].active_requests == 0,
                  "the tunnel released once the client closed")


async def test_two_sidecars_in_mutual_tls_carry_a_websocket(tmp_path: Path,
                                                            echo: Echo) -> None:
    _, port, _ = echo
    ca = MeshCa.make(tmp_path)
    destination = Sidecar(destination_snapshot(port, ca.tls("web")))
    await destination.start()
    caller = Sidecar(caller_snapshot([destination.ports()["inbound:web"]], ca.tls("client")))
    await caller.start()
    try:
        async with connect(ws_url(caller, "/room")) as ws:
            await ws.send("over mTLS")
            assert await asyncio.wait_for(ws.recv(), 10) == "/room over mTLS"
        served = render(destination.metrics.registry).decode()
        assert request_count(served, direction="inbound", source="client", code="101") == 1
        # An L7 intention judges the handshake as it judges any request.
        destination.apply(with_intentions(
            destination.snapshot, 1, "allow", {"source": "client", "destination": "web",
                                               "permissions": [{"action": "deny", "http": {
                                                   "path_prefix": "/admin"}}]}))
        with pytest.raises(websockets.exceptions.InvalidStatus) as denied:
            async with connect(ws_url(caller, "/admin/shell")):
                pass
        assert denied.value.response.status_code == 403
        assert denied.value.response.headers["x-meshlet-error"] == "intention_denied"
        async with connect(ws_url(caller, "/room")) as ws:  # other paths still allowed
            await ws.send("still")
            assert await asyncio.wait_for(ws.recv(), 10) == "/room still"
    finally:
        await caller.stop(0)
        await destination.stop(0)


async def test_an_upgrade_the_upstream_declines_is_an_ordinary_response() -> None:
    app, port = await start_backend("plain")  # an HTTP server that knows no WebSocket
    sidecar = await sidecar_to(port)
    try:
        with pytest.raises(websockets.exceptions.InvalidStatus) as declined:
            async with connect(ws_url(sidecar)):
                pass
        assert declined.value.response.status_code == 200  # what the app answered
        assert b"plain" in declined.value.response.body
        text = render(sidecar.metrics.registry).decode()
        assert request_count(text, code="200", direction="outbound") == 1
    finally:
        await sidecar.stop(1)
        await app.cleanup()


async def test_an_idle_tunnel_is_closed_and_its_upstream_with_it(echo: Echo) -> None:
    _, port, connections = echo
    sidecar = await sidecar_to(port, idle_timeout=0.5)
    try:
        async with connect(ws_url(sidecar), ping_interval=None) as ws:
            await ws.send("once")
            assert await asyncio.wait_for(ws.recv(), 10) == "/chat once"
            with pytest.raises(websockets.exceptions.ConnectionClosed):
                await asyncio.wait_for(ws.recv(), 30)  # nothing moves: closed
        await settled(lambda: bool(connections) and connections[0].state.name == "CLOSED",
                      "the upstream side closed too")
    finally:
        await sidecar.stop(1)


async def test_the_upstream_closing_closes_the_client(echo: Echo, proxied: Sidecar) -> None:
    async with connect(ws_url(proxied)) as ws:
        await ws.send("hi")
        await asyncio.wait_for(ws.recv(), 10)
        await echo[2][0].close(1001, "going away")
        with pytest.raises(websockets.exceptions.ConnectionClosed) as closed:
            await asyncio.wait_for(ws.recv(), 10)
        assert closed.value.rcvd is not None and closed.value.rcvd.code == 1001


async def test_bytes_sent_right_after_the_head_reach_the_upstream() -> None:
    """A client may send its first frames without waiting for the 101."""
    got = asyncio.get_running_loop().create_future()

    async def upstream(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\n"
                     b"Upgrade: raw\r\n\r\nwelcome")
        got.set_result((head, await reader.readexactly(5)))
        writer.close()

    server, port = await start_raw_backend(upstream)
    sidecar = await sidecar_to(port)
    try:
        out = await raw_exchange(sidecar.ports()["outbound:web"],
                                 b"GET /x HTTP/1.1\r\nHost: web\r\nConnection: keep-alive, "
                                 b"Upgrade\r\nUpgrade: raw\r\nKeep-Alive: 5\r\n\r\nearly")
        assert out.startswith(b"HTTP/1.1 101") and out.endswith(b"welcome")
        head, early = await asyncio.wait_for(got, 10)
        assert early == b"early"
        lines = head.lower().split(b"\r\n")
        assert b"upgrade: raw" in lines and b"connection: upgrade" in lines
        assert not any(line.startswith(b"keep-alive") for line in lines)  # hop-by-hop
    finally:
        await sidecar.stop(1)
        server.close()


async def test_no_endpoint_answers_a_named_503() -> None:
    sidecar = await sidecar_to()
    try:
        with pytest.raises(websockets.exceptions.InvalidStatus) as refused:
            async with connect(ws_url(sidecar)):
                pass
        assert refused.value.response.status_code == 503
        assert refused.value.response.headers["x-meshlet-error"] == "no_healthy_endpoint"
    finally:
        await sidecar.stop(1)


@pytest.mark.parametrize("head", [
    b"CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\n",
])
async def test_connect_is_refused(head: bytes, echo: Echo, proxied: Sidecar) -> None:
    out = await raw_exchange(proxied.ports()["outbound:web"], head)
    assert out.startswith(b"HTTP/1.1 501") and b"upgrade_unsupported" in out
    assert echo[2] == []


async def test_a_config_swap_leaves_an_open_tunnel_alone(proxied: Sidecar) -> None:
    async with connect(ws_url(proxied)) as ws:
        await ws.send("before")
        assert await asyncio.wait_for(ws.recv(), 10) == "/chat before"
        assert proxied.apply(replace(proxied.snapshot, version=2))
        await ws.send("after")
        assert await asyncio.wait_for(ws.recv(), 10) == "/chat after"

"""The pool's decisions carried out on real sockets: a waiting request opens a connection
when the one it waited for is lost, a pooled connection the peer closed is replaced
by a new one without the client seeing it (even when the queue is full), a request for
an endpoint with no connection, at the limit, closes an idle one of another endpoint
instead of waiting, and a connect cancelled once connected gives its slot back once."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
from prometheus_client import generate_latest

from meshlet.proxy.config import ClusterConfig, Endpoint, ListenerConfig, Snapshot
from meshlet.proxy.connector import Connector
from meshlet.proxy.pool import OPEN, ConnectionPool
from meshlet.proxy.sidecar import Sidecar
from meshlet.proxy.upstream import UpstreamHttp
from tests.conftest import async_wait_until

OK = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok"


class RawBackend:
    """A backend on raw sockets, to close a connection exactly when a test needs it:
    ``drop_first`` holds the first connection's request until ``gate`` opens, then
    closes it unanswered; ``one_per_connection`` answers one request a connection and
    closes on the next (a keep-alive peer closing as the sidecar reuses it); with
    ``hold_reuse`` too, it holds that next request until ``gate`` opens."""

    def __init__(self, drop_first: bool = False, one_per_connection: bool = False,
                 hold_reuse: bool = False) -> None:
        self.drop_first = drop_first
        self.one_per_connection = one_per_connection or hold_reuse
        self.hold_reuse = hold_reuse
        self.gate = asyncio.Event()
        self.connections = 0
        self.held = 0
        self.server: asyncio.Server | None = None
        self.port = 0

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        number = self.connections
        answered = 0
        try:
            while await reader.readuntil(b"\r\n\r\n"):
                if self.drop_first and number == 1:
                    self.held += 1
                    await self.gate.wait()
                    return
                if self.one_per_connection and answered == 1:
                    if self.hold_reuse:
                        self.held += 1
                        await self.gate.wait()
                    return
                writer.write(OK)
                answered += 1
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    async def start(self) -> RawBackend:
        self.server = await asyncio.start_server(self.serve, "127.0.0.1", 0)
        self.port = self.server.sockets[0].getsockname()[1]
        return self

    async def stop(self) -> None:
        self.gate.set()
        if self.server is not None:
            self.server.close()


@pytest.fixture
async def sidecars() -> AsyncIterator[list[Sidecar]]:
    started: list[Sidecar] = []
    yield started
    for sidecar in started:
        await sidecar.stop(1)


async def sidecar_for(backend: RawBackend | list[RawBackend], started: list[Sidecar],
                      **settings: object) -> int:
    backends = backend if isinstance(backend, list) else [backend]
    endpoints = tuple(Endpoint(f"b{i}", "127.0.0.1", b.port) for i, b in enumerate(backends))
    snapshot = Snapshot(1, "client", "client-0", (ListenerConfig("svc", "outbound",
                                                                 "127.0.0.1", 0),),
                        {"outbound:svc": ClusterConfig("svc", endpoints, settings)})
    sidecar = Sidecar(snapshot)
    await sidecar.start()
    started.append(sidecar)
    (port,) = sidecar.ports().values()
    return port


async def request(port: int) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(b"GET / HTTP/1.1\r\nhost: svc\r\n\r\n")
        head = await reader.readuntil(b"\r\n\r\n")
        length = int(head.lower().split(b"content-length: ")[1].split(b"\r\n")[0])
        return head.split(b" ")[1] + b" " + await reader.readexactly(length)
    finally:
        writer.close()


async def test_a_waiting_request_opens_a_connection_when_the_one_it_waited_for_is_lost(
        sidecars: list[Sidecar]) -> None:
    backend = await RawBackend(drop_first=True).start()
    try:
        port = await sidecar_for(backend, sidecars, max_connections=1)
        first = asyncio.ensure_future(request(port))
        await async_wait_until(lambda: asyncio.sleep(0, backend.held == 1))
        second = asyncio.ensure_future(request(port))
        pool = next(iter(sidecars[0].clusters.values())).pool
        await async_wait_until(lambda: asyncio.sleep(0, len(pool.pending) == 1),
                               message="the second request waiting for a connection")
        backend.gate.set()  # the backend closes the first connection unanswered
        assert (await asyncio.wait_for(first, 10)).startswith(b"502")
        assert await asyncio.wait_for(second, 10) == b"200 ok"  # bounded: fails, not hangs
        assert backend.connections == 2
        await async_wait_until(lambda: asyncio.sleep(0, pool.active_requests == 0))
        assert (pool.connections, len(pool.pending)) == (1, 0)  # the second's, kept idle
    finally:
        await backend.stop()


async def test_a_pooled_connection_the_peer_closed_is_replaced_unseen(
        sidecars: list[Sidecar]) -> None:
    backend = await RawBackend(one_per_connection=True).start()
    try:
        port = await sidecar_for(backend, sidecars)
        assert await request(port) == b"200 ok"
        assert await request(port) == b"200 ok"  # sent on the pooled one, which closed
        assert backend.connections == 2
        text = generate_latest(sidecars[0].metrics.registry).decode()
        assert 'reason="stale_connection"' in text
    finally:
        await backend.stop()


def pool_of(sidecar: Sidecar) -> ConnectionPool:
    return next(iter(sidecar.clusters.values())).pool


async def test_a_stale_pooled_connection_is_replaced_even_when_the_queue_is_full(
        sidecars: list[Sidecar]) -> None:
    backend = await RawBackend(hold_reuse=True).start()
    try:
        port = await sidecar_for(backend, sidecars, max_connections=1,
                                 max_pending_requests=1)
        pool = pool_of(sidecars[0])
        assert await request(port) == b"200 ok"  # its connection is kept idle
        second = asyncio.ensure_future(request(port))  # on that one, which the peer holds
        await async_wait_until(lambda: asyncio.sleep(0, backend.held == 1))
        third = asyncio.ensure_future(request(port))
        await async_wait_until(lambda: asyncio.sleep(0, len(pool.pending) == 1),
                               message="the third request filling the queue")
        backend.gate.set()  # the peer closes the pooled connection unanswered
        # The lost connection's slot is free before its request retries, so the retry
        # waits for (or opens) a connection instead of being refused by a full queue.
        assert await asyncio.wait_for(second, 10) == b"200 ok"
        assert await asyncio.wait_for(third, 10) == b"200 ok"
        await async_wait_until(  # the last connection kept idle, each other one freed
            lambda: asyncio.sleep(0, (pool.active_requests, pool.connections) == (0, 1)),
            message="one connection left, idle")
        assert not pool.pending
    finally:
        await backend.stop()


async def test_at_the_limit_a_request_for_another_endpoint_does_not_wait_for_idle_ones(
        sidecars: list[Sidecar]) -> None:
    backends = [await RawBackend().start(), await RawBackend().start()]
    try:
        port = await sidecar_for(backends, sidecars, max_connections=1, idle_timeout=600)
        pool = pool_of(sidecars[0])
        assert await asyncio.wait_for(request(port), 10) == b"200 ok"
        # Round robin: the other endpoint. The first's idle connection is closed for it.
        assert await asyncio.wait_for(request(port), 10) == b"200 ok"  # fails, not hangs
        assert [b.connections for b in backends] == [1, 1]
        await async_wait_until(lambda: asyncio.sleep(0, pool.active_requests == 0))
        assert pool.connections == 1 and sum(map(len, pool.idle.values())) == 1
    finally:
        for backend in backends:
            await backend.stop()


class CancelledOnConnect(UpstreamHttp):
    """A connection whose opening is cancelled just as it connects (the connect timeout
    or the request finishing at that moment): asyncio then closes the new transport."""

    task: asyncio.Task[str] | None = None
    gone = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        assert self.task is not None
        self.task.cancel()

    def connection_lost(self, exc: Exception | None) -> None:
        super().connection_lost(exc)
        self.gone = True


async def test_a_connect_cancelled_once_connected_gives_its_slot_back_once() -> None:
    backend = await RawBackend().start()
    try:
        key = ("127.0.0.1", backend.port)
        pool = ConnectionPool()
        pool.set_endpoints({key})
        connector = Connector(asyncio.get_running_loop())
        assert pool.acquire(key, object()) == (OPEN, None)  # type: ignore[arg-type]
        conn = CancelledOnConnect(pool, key, connector)
        conn.task = asyncio.ensure_future(connector.open(conn, Endpoint("b", *key), 10))
        with pytest.raises(asyncio.CancelledError):
            await conn.task
        await async_wait_until(lambda: asyncio.sleep(0, conn.gone),
                               message="the transport made before the cancel to close")
        assert pool.connections == 0  # not -1: both the connect and the close gave it back
    finally:
        await backend.stop()

"""The sidecar's HTTP handling against real backends on loopback sockets."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from meshlet.proxy.config import ClusterConfig, Endpoint, ListenerConfig, Snapshot
from meshlet.proxy.sidecar import Sidecar
from tests.request_series import request_count, request_series


async def start_backend(name: str) -> tuple[web.AppRunner, int]:
    async def echo(request: web.Request) -> web.StreamResponse:
        body = await request.read()
        peer = request.transport.get_extra_info("peername")[1]  # type: ignore[union-attr]
        if request.query.get("chunked"):
            resp = web.StreamResponse(headers={"x-backend": name})
            resp.enable_chunked_encoding()
            await resp.prepare(request)
            for _ in range(int(request.query["chunked"])):
                await resp.write(b"x" * 1000)
            await resp.write_eof()
            return resp
        if request.query.get("size"):
            return web.Response(body=b"y" * int(request.query["size"]),
                                headers={"x-backend": name})
        if request.query.get("sleep"):
            await asyncio.sleep(float(request.query["sleep"]))
        return web.json_response({
            "backend": name, "method": request.method, "path": request.path_qs,
            "length": len(body), "sha": hashlib.sha256(body).hexdigest(),
            "peer_port": peer, "te": request.headers.get("Transfer-Encoding"),
            "connection": request.headers.get("Connection")}, headers={"x-backend": name})

    app = web.Application(client_max_size=64 * 1024 * 1024)
    app.router.add_route("*", "/{tail:.*}", echo)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    return runner, site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]


async def start_raw_backend(handler: Callable[[asyncio.StreamReader, asyncio.StreamWriter],
                                              Awaitable[None]]) -> tuple[asyncio.Server, int]:
    server = await asyncio.start_server(handler, "127.0.0.1", 0)
    return server, server.sockets[0].getsockname()[1]


def endpoint(port: int, name: str = "b") -> Endpoint:
    return Endpoint(f"{name}-{port}", "127.0.0.1", port)


async def start_sidecar(*ports: int, protocol: str = "http", **settings: Any) -> Sidecar:
    snapshot = Snapshot(1, "client", "client-0",
                        (ListenerConfig("web", "outbound", "127.0.0.1", 0, protocol),),
                        {"outbound:web": ClusterConfig("web", tuple(endpoint(p) for p in ports),
                                                       settings)})
    sidecar = Sidecar(snapshot)
    await sidecar.start()
    return sidecar


def url(sidecar: Sidecar, path: str = "/") -> str:
    return f"http://127.0.0.1:{sidecar.ports()['outbound:web']}{path}"


@contextlib.asynccontextmanager
async def running_backends(n: int) -> AsyncIterator[list[int]]:
    """``n`` echo backends, b0 … b(n-1): their ports."""
    started = [await start_backend(f"b{i}") for i in range(n)]
    try:
        yield [port for _, port in started]
    finally:
        for runner, _ in started:
            await runner.cleanup()


@pytest.fixture
async def backends() -> AsyncIterator[list[int]]:
    async with running_backends(2) as ports:
        yield ports


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=1, force_close=False)) as s:
        yield s


async def test_keep_alive_both_sides_and_round_robin(backends: list[int],
                                                     session: aiohttp.ClientSession) -> None:
    sidecar = await start_sidecar(*backends)
    try:
        seen = []
        for _ in range(6):
            async with session.get(url(sidecar, "/a?b=1")) as resp:
                assert resp.status == 200
                seen.append(await resp.json())
        assert [s["backend"] for s in seen] == ["b0", "b1"] * 3
        assert seen[0]["path"] == "/a?b=1"
        # One pooled upstream connection per backend carried all its requests.
        assert len({s["peer_port"] for s in seen if s["backend"] == "b0"}) == 1
        assert len({s["peer_port"] for s in seen if s["backend"] == "b1"}) == 1
        # And the client used one downstream connection throughout.
        assert len(sidecar.listeners[0].connections) == 1
    finally:
        await sidecar.stop(1)


async def test_chunked_request_and_response(backends: list[int],
                                            session: aiohttp.ClientSession) -> None:
    sidecar = await start_sidecar(backends[0])

    async def gen() -> AsyncIterator[bytes]:
        for i in range(50):
            yield bytes([i % 256]) * 997

    expected = hashlib.sha256(b"".join(bytes([i % 256]) * 997 for i in range(50))).hexdigest()
    try:
        async with session.post(url(sidecar), data=gen()) as resp:
            body = await resp.json()
        assert body["te"] == "chunked" and body["sha"] == expected
        async with session.get(url(sidecar, "/?chunked=300")) as resp:
            assert resp.headers.get("Transfer-Encoding") == "chunked"
            assert await resp.read() == b"x" * 300_000
    finally:
        await sidecar.stop(1)


async def test_large_bodies_both_ways(backends: list[int],
                                      session: aiohttp.ClientSession) -> None:
    sidecar = await start_sidecar(backends[0])
    payload = bytes(range(256)) * (20 * 1024 * 1024 // 256)  # 20 MiB
    try:
        async with session.put(url(sidecar, "/up"), data=payload) as resp:
            body = await resp.json()
        assert body["length"] == len(payload)
        assert body["sha"] == hashlib.sha256(payload).hexdigest()
        async with session.get(url(sidecar, "/?size=30000000")) as resp:
            data = await resp.read()
        assert len(data) == 30_000_000 and resp.headers["Content-Length"] == "30000000"
    finally:
        await sidecar.stop(1)


async def test_upstream_closes_before_response_gives_502(
        session: aiohttp.ClientSession) -> None:
    async def half_headers(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Le")
        await writer.drain()
        writer.close()

    server, port = await start_raw_backend(half_headers)
    sidecar = await start_sidecar(port, retries=0)
    try:
        async with session.post(url(sidecar), data=b"not idempotent") as resp:
            assert resp.status == 502
            assert resp.headers["x-meshlet-error"] == "upstream_reset"
        async with session.get(url(sidecar)) as resp:
            assert resp.status == 502
            assert await resp.text() == "upstream_reset\n"
    finally:
        await sidecar.stop(1)
        server.close()


async def test_upstream_closes_mid_body_aborts_client(session: aiohttp.ClientSession) -> None:
    async def half_body(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n" + b"z" * 40)
        await writer.drain()
        writer.close()

    server, port = await start_raw_backend(half_body)
    sidecar = await start_sidecar(port)
    try:
        with pytest.raises(aiohttp.ClientPayloadError):
            async with session.get(url(sidecar)) as resp:
                await resp.read()
        text = await fetch_metrics(sidecar)
        assert request_count(text, code="502", response_class="5xx", destination="web",
                             direction="outbound", reason="upstream_reset") == 1
    finally:
        await sidecar.stop(1)
        server.close()


async def fetch_metrics(sidecar: Sidecar) -> str:
    from prometheus_client import generate_latest
    return generate_latest(sidecar.metrics.registry).decode()


async def raw_exchange(port: int, data: bytes) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(data)
    await writer.drain()
    out = await asyncio.wait_for(reader.read(), 10)  # until the sidecar closes
    writer.close()
    return out


async def test_pipelined_requests_answered_in_order_and_connection_close(
        backends: list[int]) -> None:
    sidecar = await start_sidecar(backends[0])
    port = sidecar.ports()["outbound:web"]
    try:
        out = await raw_exchange(port, b"GET /first HTTP/1.1\r\nHost: x\r\n\r\n"
                                       b"GET /second HTTP/1.1\r\nHost: x\r\n\r\n"
                                       b"GET /third HTTP/1.1\r\nHost: x\r\n"
                                       b"Connection: close\r\n\r\n")
        assert out.count(b"HTTP/1.1 200") == 3
        assert out.index(b"/first") < out.index(b"/second") < out.index(b"/third")
        # The last response announces the close, and the sidecar did close (read() ended).
        assert out.rsplit(b"HTTP/1.1 200", 1)[1].lower().count(b"connection: close") == 1
    finally:
        await sidecar.stop(1)


async def start_recording_backend() -> tuple[web.AppRunner, int, list[tuple[str, Any, bytes]]]:
    """A backend that records each request's path, head headers and body."""
    seen: list[tuple[str, Any, bytes]] = []

    async def record(request: web.Request) -> web.Response:
        seen.append((request.path, request.raw_headers, await request.read()))
        return web.Response(text=request.path)

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", record)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    return runner, site._server.sockets[0].getsockname()[1], seen  # type: ignore[union-attr]


INJECTED = b"X-Injected-Trailer: yes\r\nX-Forwarded-For: 10.9.9.9\r\n"


@pytest.mark.parametrize("trailers", [
    pytest.param(INJECTED, id="injected"), pytest.param(INJECTED + b"Host: evil\r\n", id="host")])
@pytest.mark.parametrize("first", [
    pytest.param(b"GET /first HTTP/1.1\r\nHost: web\r\n\r\n", id="queued-behind-another"),
    pytest.param(b"", id="first-on-the-connection")])
async def test_trailers_of_a_chunked_request_never_become_headers(first: bytes,
                                                                 trailers: bytes) -> None:
    """httptools reports trailers through on_header: they were appended to the head of a
    request still queued (built later), and a trailing Host made a 'two Host headers'
    400 mid-body. Now trailers are dropped; the body arrives whole."""
    runner, port, seen = await start_recording_backend()
    sidecar = await start_sidecar(port)
    try:
        out = await raw_exchange(sidecar.ports()["outbound:web"], first + (
            b"POST /second HTTP/1.1\r\nHost: web\r\nTransfer-Encoding: chunked\r\n\r\n"
            b"3\r\nabc\r\n0\r\n" + trailers + b"\r\n"
            b"GET /third HTTP/1.1\r\nHost: web\r\nConnection: close\r\n\r\n"))
        assert out.count(b"HTTP/1.1 200") == (3 if first else 2), out
        assert [path for path, _, _ in seen] == (["/first"] if first else []) + \
            ["/second", "/third"]
        for path, headers, body in seen:
            names = [name.lower() for name, _ in headers]
            assert b"x-injected-trailer" not in names, path
            assert b"10.9.9.9" not in b" ".join(value for _, value in headers), path
            assert names.count(b"host") == 1 and (b"host", b"web") in [
                (n.lower(), v) for n, v in headers], path
            assert body == (b"abc" if path == "/second" else b"")
    finally:
        await sidecar.stop(1)
        await runner.cleanup()


async def test_headers_a_connection_header_lists_stay_on_their_hop() -> None:
    """A name listed in ``Connection`` is an option of that hop alone (RFC 9110, 7.6.1):
    neither the request's nor the response's reaches the other side."""
    seen: list[bytes] = []

    async def backend(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        seen.append(await reader.readuntil(b"\r\n\r\n"))
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: X-Upstream-Hop\r\n"
                     b"X-Upstream-Hop: 1\r\nX-Kept: 1\r\n\r\nok")
        await writer.drain()
        writer.close()

    server, port = await start_raw_backend(backend)
    sidecar = await start_sidecar(port)
    try:
        out = await raw_exchange(sidecar.ports()["outbound:web"],
                                 b"GET /hop HTTP/1.1\r\nHost: web\r\nX-Client-Hop: secret\r\n"
                                 b"Connection: close, X-Client-Hop\r\nX-Also: kept\r\n\r\n")
        head = out.split(b"\r\n\r\n", 1)[0].lower()
        assert out.startswith(b"HTTP/1.1 200") and out.endswith(b"ok"), out
        assert b"x-upstream-hop" not in head and b"x-kept: 1" in head, out
        request = seen[0].lower()
        assert b"x-client-hop" not in request and b"secret" not in request, seen
        assert b"x-also: kept" in request and b"host: web" in request, seen
    finally:
        await sidecar.stop(1)
        server.close()
        await server.wait_closed()


async def test_http10_and_head(backends: list[int]) -> None:
    sidecar = await start_sidecar(backends[0])
    port = sidecar.ports()["outbound:web"]
    try:
        out = await raw_exchange(port, b"GET /old HTTP/1.0\r\n\r\n")
        assert out.startswith(b"HTTP/1.1 200") and b"/old" in out
        out = await raw_exchange(port, b"HEAD /?size=5000 HTTP/1.1\r\nHost: x\r\n\r\n"
                                       b"GET /after-head HTTP/1.1\r\nHost: x\r\n"
                                       b"Connection: close\r\n\r\n")
        head, rest = out.split(b"\r\n\r\n", 1)
        assert b"content-length: 5000" in head.lower()
        assert rest.startswith(b"HTTP/1.1 200") and b"/after-head" in rest
    finally:
        await sidecar.stop(1)


async def test_malformed_request_gets_400(backends: list[int]) -> None:
    sidecar = await start_sidecar(backends[0])
    try:
        out = await raw_exchange(sidecar.ports()["outbound:web"], b"NOT HTTP AT ALL\r\n\r\n")
        assert out.startswith(b"HTTP/1.1 400") and b"x-meshlet-error: bad_request" in out
    finally:
        await sidecar.stop(1)


async def test_no_endpoints_is_a_named_503(session: aiohttp.ClientSession) -> None:
    sidecar = await start_sidecar()
    try:
        async with session.get(url(sidecar)) as resp:
            assert resp.status == 503
            assert resp.headers["x-meshlet-error"] == "no_healthy_endpoint"
        assert request_series(await fetch_metrics(sidecar)) == [(
            {"direction": "outbound", "source": "client", "destination": "web",
             "destination_instance": "", "code": "503", "response_class": "5xx",
             "reason": "no_healthy_endpoint", "grpc_status": ""}, 1.0)]
    finally:
        await sidecar.stop(1)


async def closed_port() -> int:
    """A loopback port that was just listening and now refuses connections."""
    server, port = await start_raw_backend(lambda r, w: asyncio.sleep(0))
    server.close()
    await server.wait_closed()
    return port


async def test_connect_refused_is_retried_on_another_endpoint(
        backends: list[int], session: aiohttp.ClientSession) -> None:
    dead = await closed_port()
    sidecar = await start_sidecar(dead, backends[0])
    try:
        for _ in range(4):
            async with session.get(url(sidecar)) as resp:
                assert resp.status == 200
        metrics = await fetch_metrics(sidecar)
        assert 'meshlet_proxy_retries_total{destination="web",direction="outbound",' \
               'reason="connect_refused"} 4.0' in metrics  # round robin meets the dead one first
        # The series name the instance that answered, never the one that refused.
        assert request_count(metrics, destination_instance=f"b-{backends[0]}", code="200",
                             reason="") == 4
        assert request_count(metrics, destination_instance=f"b-{dead}") == 0
    finally:
        await sidecar.stop(1)


async def test_all_endpoints_refusing_names_the_reason(session: aiohttp.ClientSession) -> None:
    dead = await closed_port()
    sidecar = await start_sidecar(dead)
    try:
        async with session.get(url(sidecar)) as resp:
            assert resp.status == 503
            assert resp.headers["x-meshlet-error"] == "connect_refused"
        assert request_count(await fetch_metrics(sidecar), destination_instance=f"b-{dead}",
                             code="503", response_class="5xx", reason="connect_refused") == 1
    finally:
        await sidecar.stop(1)


async def test_request_timeout_gives_504(backends: list[int],
                                         session: aiohttp.ClientSession) -> None:
    sidecar = await start_sidecar(backends[0], request_timeout="100ms")
    try:
        async with session.get(url(sidecar, "/?sleep=5")) as resp:
            assert resp.status == 504
            assert resp.headers["x-meshlet-error"] == "request_timeout"
    finally:
        await sidecar.stop(1)


async def test_config_swap_moves_traffic_and_in_flight_request_finishes(
        backends: list[int]) -> None:
    sidecar = await start_sidecar(backends[0])
    try:
        async with aiohttp.ClientSession() as s1, aiohttp.ClientSession() as s2:
            slow = asyncio.ensure_future(s1.get(url(sidecar, "/?sleep=0.5")))
            await wait_for_active(sidecar)
            new = Snapshot(2, "client", "client-0", sidecar.snapshot.listeners,
                           {"outbound:web": ClusterConfig("web", (endpoint(backends[1]),))})
            assert sidecar.apply(new) is True
            assert sidecar.apply(new) is False  # same version again: ignored
            async with s2.get(url(sidecar)) as resp:
                assert (await resp.json())["backend"] == "b1"
            resp = await slow
            assert resp.status == 200 and (await resp.json())["backend"] == "b0"
            resp.release()
    finally:
        await sidecar.stop(1)


async def wait_for_active(sidecar: Sidecar) -> None:
    from tests.conftest import async_wait_until

    async def active() -> bool:
        return sidecar.active_requests > 0
    await async_wait_until(active, message="the slow request to be in flight")


async def test_tcp_mode_relays_bytes_both_ways() -> None:
    async def echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        data = await reader.read()  # until the client half-closes
        writer.write(data.upper())
        await writer.drain()
        writer.close()

    server, port = await start_raw_backend(echo)
    sidecar = await start_sidecar(port, protocol="tcp")
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1",
                                                       sidecar.ports()["outbound:web"])
        writer.write(b"hello mesh " * 10000)
        writer.write_eof()
        assert await asyncio.wait_for(reader.read(), 10) == b"HELLO MESH " * 10000
        writer.close()
    finally:
        await sidecar.stop(1)
        server.close()


async def test_drain_finishes_in_flight_and_refuses_new(backends: list[int]) -> None:
    sidecar = await start_sidecar(backends[0])
    port = sidecar.ports()["outbound:web"]
    async with aiohttp.ClientSession() as s:
        slow = asyncio.ensure_future(s.get(url(sidecar, "/?sleep=0.3")))
        await wait_for_active(sidecar)
        sidecar.drain()
        resp = await slow
        assert resp.status == 200
        assert resp.headers.get("Connection", "").lower() == "close"
        resp.release()
        with pytest.raises(OSError):
            await asyncio.open_connection("127.0.0.1", port)
    await sidecar.stop(1)


async def test_tcp_mode_in_a_real_sidecar_process(tmp_path: Any) -> None:
    """The sidecar process runs on uvloop, which may deliver bytes before the upstream
    connection exists; none may be lost."""
    import json
    import sys

    async def echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write((await reader.read()).upper())
        await writer.drain()
        writer.close()

    server, port = await start_raw_backend(echo)
    boot = {"version": 1, "service": "t", "instance": "t-0",
            "listeners": [{"name": "up", "direction": "outbound", "host": "127.0.0.1",
                           "port": 0, "protocol": "tcp"}],
            "clusters": {"outbound:up": {"name": "up", "endpoints": [
                {"id": "e", "address": "127.0.0.1", "port": port}]}}}
    (tmp_path / "boot.json").write_text(json.dumps(boot))
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "meshlet", "proxy", "--bootstrap", str(tmp_path / "boot.json"),
        "--port-file", str(tmp_path / "ports.json"))
    try:
        from tests.conftest import async_wait_until
        await async_wait_until(lambda: asyncio.sleep(0, (tmp_path / "ports.json").exists()),
                               message="the sidecar to listen")
        listen = json.loads((tmp_path / "ports.json").read_text())["listeners"]["outbound:up"]
        for _ in range(5):  # each connection sends at once, before the sidecar connects on
            reader, writer = await asyncio.open_connection("127.0.0.1", listen)
            writer.write(b"first bytes")
            writer.write_eof()
            assert await asyncio.wait_for(reader.read(), 10) == b"FIRST BYTES"
            writer.close()
    finally:
        proc.terminate()
        await proc.wait()
        server.close()


@pytest.mark.parametrize("header", [b"Content-Type: text/plain",
                                    b"X-Note: chunked, but only in name"])
async def test_response_delimited_by_close_is_relayed_whole(header: bytes) -> None:
    """Only a Transfer-Encoding or Content-Length header frames the body: a header that
    merely mentions "chunked" leaves its end to the close, a whole 200."""
    async def until_close(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 200 OK\r\n%b\r\n\r\nthe whole " % header)
        await writer.drain()
        writer.write(b"body, ended by close")
        await writer.drain()
        writer.close()

    server, port = await start_raw_backend(until_close)
    sidecar = await start_sidecar(port)
    try:
        out = await raw_exchange(sidecar.ports()["outbound:web"],
                                 b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        assert out.startswith(b"HTTP/1.1 200 OK")
        assert out.endswith(b"the whole body, ended by close")
        text = await fetch_metrics(sidecar)
        assert request_count(text, code="200", destination="web", direction="outbound",
                             reason="") == 1
    finally:
        await sidecar.stop(1)
        server.close()


async def test_client_cut_off_mid_body_is_dropped_not_timed_out(backends: list[int]) -> None:
    """A client that half-closes before its body is whole never finishes its request:
    the sidecar closes at once (and drops the upstream side) rather than holding both
    until the request timeout answers 504 (found by tests/integration/test_sidecar_fuzz)."""
    sidecar = await start_sidecar(backends[0], request_timeout="60s")
    try:
        reader, writer = await asyncio.open_connection(
            "127.0.0.1", sidecar.ports()["outbound:web"])
        writer.write(b"POST / HTTP/1.1\r\nHost: web\r\nContent-Length: 5\r\n\r\nab")
        await writer.drain()
        writer.write_eof()
        answer = await asyncio.wait_for(reader.read(), 30)
        writer.close()
        assert b"504" not in answer and sidecar.active_requests == 0
    finally:
        await sidecar.stop(grace=1.0)

"""The sidecar's admin API on its own HTTP server: every route, every refusal, TCP and
Unix sockets, keep-alive, pipelining and the bounds on slow or large requests."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from meshlet.proxy.admin import AdminApi
from meshlet.proxy.admin_http import AdminServer, Limits, serve
from meshlet.proxy.config import ClusterConfig, Endpoint, ListenerConfig, Snapshot
from meshlet.proxy.sidecar import Sidecar


def snapshot(version: int = 1, **settings: Any) -> Snapshot:
    return Snapshot(version, "web", "web-1",
                    (ListenerConfig("api", "outbound", "127.0.0.1", 0),),
                    {"outbound:api": ClusterConfig("api", (Endpoint("e1", "127.0.0.1", 9),),
                                                   settings)})


@pytest.fixture
async def sidecar() -> AsyncIterator[Sidecar]:
    s = Sidecar(snapshot())
    await s.start()
    yield s
    await s.stop(0)


async def admin_for(sidecar: Sidecar, host: str = "127.0.0.1",
                    limits: Limits | None = None) -> AdminServer:
    return await serve(AdminApi(sidecar).handle, host, 0, limits)


@pytest.fixture
async def admin(sidecar: Sidecar) -> AsyncIterator[str]:
    server = await admin_for(sidecar)
    yield f"http://127.0.0.1:{server.address}"
    await server.stop()


async def call(method: str, url: str, **kwargs: Any) -> tuple[int, Any, aiohttp.ClientResponse]:
    async with aiohttp.ClientSession() as http, http.request(method, url, **kwargs) as resp:
        raw = await resp.read()
        body = json.loads(raw) if raw and resp.content_type == "application/json" else raw
        return resp.status, body, resp


async def raw_exchange(port: int, data: bytes) -> bytes:
    """Send ``data`` and read until the server closes the connection."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(data)
    try:
        return await reader.read(-1)
    finally:
        writer.close()


def assert_error(body: Any, code: str, field: str | None = None) -> None:
    assert set(body) == {"error"} and set(body["error"]) == {"code", "message", "field"}
    assert body["error"]["code"] == code and body["error"]["field"] == field
    assert "Traceback" not in body["error"]["message"]


async def test_ready_config_and_metrics(admin: str, sidecar: Sidecar) -> None:
    status, body, _ = await call("GET", f"{admin}/ready")
    assert status == 200 and body == {"ready": True, "version": 1, "draining": False,
                                      "active_requests": 0, "ports": sidecar.ports()}
    status, body, _ = await call("GET", f"{admin}/config")
    assert status == 200 and body["version"] == 1 and body["ports"] == sidecar.ports()
    assert body["relay"]["build"] in ("compiled", "python") and body["relay"]["why"]
    assert body["clusters"]["outbound:api"]["effective"]["lb"] == "round_robin"
    assert Snapshot.from_dict(body) == sidecar.snapshot
    status, text, resp = await call("GET", f"{admin}/metrics")
    assert status == 200 and resp.headers["Content-Type"].startswith("text/plain")
    assert b"meshlet_proxy_config_version 1.0" in text


async def test_put_config_applies_newer_versions_only(admin: str, sidecar: Sidecar) -> None:
    newer = snapshot(2, retries=0, connect_timeout="250ms")
    status, body, _ = await call("PUT", f"{admin}/config", json=newer.to_dict())
    assert (status, body) == (200, {"applied": True, "version": 2})
    assert sidecar.clusters["outbound:api"].settings.connect_timeout == 0.25
    status, body, _ = await call("PUT", f"{admin}/config", json=snapshot(2).to_dict())
    assert (status, body) == (200, {"applied": False, "version": 2})


@pytest.mark.parametrize(("body", "field"), [
    (b"{not json", "body"), (b"", "snapshot"), (b"[1, 2]", "snapshot"),
    (json.dumps({"version": "x"}).encode(), "version"),
    (json.dumps({**snapshot(3).to_dict(), "listeners": []}).encode(), "listeners"),
    (json.dumps(snapshot(3, lb="fastest").to_dict()).encode(), "lb"),
    (json.dumps(snapshot(3, retries=99).to_dict()).encode(), "retries"),
])
async def test_bad_config_is_refused_and_changes_nothing(admin: str, sidecar: Sidecar,
                                                         body: bytes, field: str) -> None:
    status, reply, _ = await call("PUT", f"{admin}/config", data=body)
    assert status == 400
    assert_error(reply, "invalid", field)
    assert sidecar.snapshot.version == 1


async def test_oversize_body_gets_413_before_it_is_read(sidecar: Sidecar) -> None:
    server = await admin_for(sidecar, limits=Limits(max_body=1000))
    try:
        head = b"PUT /config HTTP/1.1\r\nHost: x\r\nContent-Length: 5000\r\n\r\n"
        reply = await raw_exchange(int(server.address), head)  # no body sent at all
        assert reply.startswith(b"HTTP/1.1 413 ")
        assert_error(json.loads(reply.split(b"\r\n\r\n", 1)[1]), "invalid", "body")
        chunked = (b"PUT /config HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
                   + b"400\r\n" + b"x" * 1024 + b"\r\n") * 2
        assert (await raw_exchange(int(server.address), chunked)).startswith(b"HTTP/1.1 413 ")
        status, _, _ = await call("PUT", f"http://127.0.0.1:{server.address}/config",
                                  data=b"x" * 2000)
        assert status == 413
    finally:
        await server.stop()


async def test_drain(admin: str, sidecar: Sidecar) -> None:
    status, body, _ = await call("POST", f"{admin}/drain?direction=sideways")
    assert status == 400
    assert_error(body, "invalid", "direction")
    status, body, _ = await call("POST", f"{admin}/drain?direction=outbound")
    assert (status, body) == (200, {"active_requests": 0})
    status, body, _ = await call("GET", f"{admin}/ready")
    assert status == 503 and body["ready"] is False and body["draining"] is True


async def test_unknown_route_and_wrong_method(admin: str) -> None:
    status, body, _ = await call("GET", f"{admin}/nothing")
    assert status == 404
    assert_error(body, "not_found")
    assert body["error"]["message"] == "GET /nothing: Not Found"
    status, body, resp = await call("DELETE", f"{admin}/config")
    assert status == 405 and resp.headers["Allow"] == "GET, HEAD, PUT"
    assert_error(body, "method_not_allowed")
    status, body, resp = await call("GET", f"{admin}/drain")
    assert status == 405 and resp.headers["Allow"] == "POST"
    status, body, resp = await call("HEAD", f"{admin}/ready")
    assert status == 200 and body == b"" and int(resp.headers["Content-Length"]) > 0


async def test_malformed_request_gets_400_and_close(admin: str) -> None:
    port = int(admin.rsplit(":", 1)[1])
    reply = await raw_exchange(port, b"GET /ready HTTP/1.1\r\nBad Header\r\n\r\n")
    assert reply.startswith(b"HTTP/1.1 400 ") and b"Connection: close" in reply
    assert_error(json.loads(reply.split(b"\r\n\r\n", 1)[1]), "invalid")


async def test_keep_alive_and_pipelining(admin: str) -> None:
    port = int(admin.rsplit(":", 1)[1])
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(b"GET /ready HTTP/1.1\r\nHost: x\r\n\r\n"
                     b"GET /nothing HTTP/1.1\r\nHost: x\r\n\r\n")
        for expected in (b"HTTP/1.1 200 ", b"HTTP/1.1 404 "):
            head = await reader.readuntil(b"\r\n\r\n")
            assert head.startswith(expected) and b"Connection: keep-alive" in head
            length = int(head.split(b"Content-Length: ")[1].split(b"\r\n")[0])
            await reader.readexactly(length)
        writer.write(b"GET /ready HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        rest = await reader.read(-1)  # answered, then closed by the server
        assert rest.startswith(b"HTTP/1.1 200 ") and b"Connection: close" in rest
    finally:
        writer.close()


async def test_a_slow_request_is_cut_off_with_408(sidecar: Sidecar) -> None:
    server = await admin_for(sidecar, limits=Limits(request_timeout=0.2, idle_timeout=0.2))
    try:
        port = int(server.address)
        reply = await raw_exchange(port, b"PUT /config HTTP/1.1\r\nContent-Length: 10\r\n\r\n{")
        assert reply.startswith(b"HTTP/1.1 408 ")
        assert_error(json.loads(reply.split(b"\r\n\r\n", 1)[1]), "invalid")
        assert await raw_exchange(port, b"") == b""  # idle: closed without a word
    finally:
        await server.stop()


async def test_unix_socket(sidecar: Sidecar, tmp_path: Path) -> None:
    path = tmp_path / "admin.sock"
    path.write_text("stale")  # left by a crashed sidecar: replaced
    server = await admin_for(sidecar, f"unix:{path}")
    assert server.address == f"unix:{path}"
    try:
        # As the agent reaches a sidecar in a namespace of its own.
        async with aiohttp.ClientSession(connector=aiohttp.UnixConnector(str(path))) as http:
            async with http.get("http://sidecar/ready") as resp:
                assert resp.status == 200 and (await resp.json())["ready"] is True
            async with http.put("http://sidecar/config", json=snapshot(5).to_dict()) as resp:
                assert (await resp.json()) == {"applied": True, "version": 5}
            async with http.post("http://sidecar/drain?direction=inbound") as resp:
                assert (await resp.json()) == {"active_requests": 0}
    finally:
        await server.stop()
    assert not path.exists()


async def test_listen_failure_names_the_address(sidecar: Sidecar, tmp_path: Path) -> None:
    with pytest.raises(OSError, match=r"cannot listen on unix:.* for the admin API"):
        await admin_for(sidecar, f"unix:{tmp_path}/missing/admin.sock")
    server = await admin_for(sidecar)
    try:
        with pytest.raises(OSError, match=rf"cannot listen on 127.0.0.1:{server.address} "):
            await serve(AdminApi(sidecar).handle, "127.0.0.1", int(server.address))
    finally:
        await server.stop()


async def test_a_bug_in_a_route_is_a_500_without_traceback(sidecar: Sidecar,
                                                           monkeypatch: Any) -> None:
    api = AdminApi(sidecar)
    monkeypatch.setattr(api, "routes", {"/ready": {"GET": lambda request: 1 / 0}})
    server = await serve(api.handle, "127.0.0.1")
    try:
        status, body, _ = await call("GET", f"http://127.0.0.1:{server.address}/ready")
        assert status == 500
        assert_error(body, "internal")
    finally:
        await server.stop()

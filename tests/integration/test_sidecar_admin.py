"""The sidecar's admin API on its own HTTP server: every route, every refusal, TCP and
Unix sockets, who may connect (the socket's mode, the token, the read-only metrics
listener), snapshots refused whole, keep-alive, pipelining and its back-pressure, and
the bounds on slow or large requests (408, 413, 414, 431)."""

from __future__ import annotations

import asyncio
import errno
import json
import os
import shutil
import socket
import stat
import sys
import tempfile
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from meshlet.observe.exposition import CONTENT_TYPE
from meshlet.proxy.admin import AdminApi
from meshlet.proxy.admin_access import require_token
from meshlet.proxy.admin_http import WRITE_HIGH_WATER, AdminServer, Limits, encode, serve
from meshlet.proxy.admin_socket import MAX_SOCKET_PATH, socket_address
from meshlet.proxy.config import ClusterConfig, Endpoint, ListenerConfig, Snapshot
from meshlet.proxy.sidecar import Sidecar
from tests.conftest import async_wait_until


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


# -- who can reach it ------------------------------------------------------------------


async def test_unix_socket_is_0600_from_the_start(sidecar: Sidecar, tmp_path: Path) -> None:
    """Under umask 0 a plain bind makes the socket 0777; the admin's is 0600 anyway,
    because its mode is set before bind creates the file."""
    path = tmp_path / "admin.sock"
    old = os.umask(0)
    try:
        server = await admin_for(sidecar, f"unix:{path}")
    finally:
        os.umask(old)
    try:
        mode = path.lstat().st_mode
        assert stat.S_ISSOCK(mode) and stat.S_IMODE(mode) == 0o600
    finally:
        await server.stop()


async def test_unix_socket_replaces_a_stale_one_but_not_a_live_one(
        sidecar: Sidecar, tmp_path: Path) -> None:
    path = tmp_path / "admin.sock"
    with socket.socket(socket.AF_UNIX) as dead:
        dead.bind(str(path))  # as a killed sidecar leaves it: bound, nobody listening
    server = await admin_for(sidecar, f"unix:{path}")
    try:
        with pytest.raises(OSError, match=r"cannot listen on unix:.*another process listens"):
            await admin_for(sidecar, f"unix:{path}")
        status, _, _ = await unix_call(path, "GET", "/ready")  # still the first one's
        assert status == 200
    finally:
        await server.stop()


async def test_unix_socket_at_a_path_longer_than_a_socket_address(
        sidecar: Sidecar, tmp_path: Path) -> None:
    """A workload's directory can be deeper than the 107 bytes a socket address holds:
    the socket is made, and reached, through a handle on its directory."""
    deep = tmp_path / ("d" * 60) / ("e" * 60)
    deep.mkdir(parents=True)
    path = deep / "admin.sock"
    assert len(str(path)) > MAX_SOCKET_PATH
    server = await admin_for(sidecar, f"unix:{path}")
    address, handle = socket_address(str(path))
    try:
        assert handle is not None and address.startswith("/proc/self/fd/")
        assert stat.S_IMODE(path.lstat().st_mode) == 0o600
        status, _, _ = await unix_call(Path(address), "GET", "/ready")
        assert status == 200
    finally:
        if handle is not None:
            os.close(handle)
        await server.stop()
    assert not path.exists()


async def test_unix_socket_refused_in_a_directory_others_can_write(
        sidecar: Sidecar, tmp_path: Path) -> None:
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o777)  # another user could swap the socket for their own
    with pytest.raises(OSError, match=r"cannot listen on unix:.*writable by others"):
        await admin_for(sidecar, f"unix:{shared}/admin.sock")
    assert not (shared / "admin.sock").exists()


CONNECT_AS_NOBODY = """
import os, pwd, socket, sys
nobody = pwd.getpwnam("nobody")
os.setgroups([])
os.setgid(nobody.pw_gid)
os.setuid(nobody.pw_uid)
s = socket.socket(socket.AF_UNIX)
try:
    s.connect(sys.argv[1])
except OSError as exc:
    print(exc.errno)
else:
    print("connected")
"""


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root (to run a client as nobody)")
async def test_an_unprivileged_user_cannot_connect(sidecar: Sidecar) -> None:
    # A directory nobody may traverse, so that only the socket's own mode stops them.
    where = Path(tempfile.mkdtemp(prefix="meshlet-admin-"))
    try:
        where.chmod(0o711)
        path = where / "admin.sock"
        server = await admin_for(sidecar, f"unix:{path}")
        try:
            proc = await asyncio.create_subprocess_exec(
                sys.executable, "-c", CONNECT_AS_NOBODY, str(path),
                stdout=asyncio.subprocess.PIPE)
            out, _ = await proc.communicate()
            assert out.decode().strip() == str(errno.EACCES)
            status, body, _ = await unix_call(path, "GET", "/ready")  # its owner can
            assert status == 200 and body["ready"] is True
        finally:
            await server.stop()
    finally:
        shutil.rmtree(where)


async def unix_call(path: Path, method: str, target: str,
                    **kwargs: Any) -> tuple[int, Any, aiohttp.ClientResponse]:
    async with aiohttp.ClientSession(connector=aiohttp.UnixConnector(str(path))) as http, \
            http.request(method, f"http://sidecar{target}", **kwargs) as resp:
        raw = await resp.read()
        body = json.loads(raw) if raw and resp.content_type == "application/json" else raw
        return resp.status, body, resp


async def test_a_token_guards_every_request(sidecar: Sidecar) -> None:
    server = await serve(require_token(AdminApi(sidecar).handle, "s3cret"), "127.0.0.1")
    url = f"http://127.0.0.1:{server.address}"
    try:
        for method, path in (("GET", "/ready"), ("GET", "/config"), ("POST", "/drain")):
            status, body, resp = await call(method, f"{url}{path}")
            assert status == 401 and resp.headers["WWW-Authenticate"].startswith("Bearer")
            assert_error(body, "unauthorized")
        status, body, _ = await call("PUT", f"{url}/config", json=snapshot(7).to_dict(),
                                     headers={"Authorization": "Bearer wrong"})
        assert status == 403
        assert_error(body, "forbidden")
        assert sidecar.snapshot.version == 1 and not sidecar.listeners[0].draining
        for headers in ({"Authorization": "Bearer s3cret"}, {"X-Meshlet-Token": "s3cret"}):
            status, body, _ = await call("GET", f"{url}/ready", headers=headers)
            assert status == 200
        status, body, _ = await call("PUT", f"{url}/config", json=snapshot(7).to_dict(),
                                     headers={"Authorization": "bearer s3cret"})
        assert (status, body) == (200, {"applied": True, "version": 7})
    finally:
        await server.stop()


async def test_the_metrics_listener_is_read_only(sidecar: Sidecar) -> None:
    server = await serve(AdminApi(sidecar).handle_public, "127.0.0.1")
    url = f"http://127.0.0.1:{server.address}"
    try:
        status, text, resp = await call("GET", f"{url}/metrics")
        assert status == 200 and resp.headers["Content-Type"] == CONTENT_TYPE
        assert b"meshlet_proxy_config_version 1.0" in text
        status, body, _ = await call("GET", f"{url}/ready")
        assert status == 200 and body["ready"] is True
        for method, path in (("PUT", "/config"), ("GET", "/config"), ("POST", "/drain")):
            status, body, _ = await call(method, f"{url}{path}", json={})
            assert status == 404
            assert_error(body, "not_found")
        status, _, _ = await call("PUT", f"{url}/metrics", data=b"")
        assert status == 405
        assert sidecar.snapshot.version == 1 and not sidecar.listeners[0].draining
    finally:
        await server.stop()


def test_metrics_content_type_is_prometheus_text_format() -> None:
    assert CONTENT_TYPE == "text/plain; version=0.0.4; charset=utf-8"


# -- snapshots, whole or not at all -----------------------------------------------------


async def test_a_refused_snapshot_changes_nothing(admin: str, sidecar: Sidecar) -> None:
    """The first cluster is fine (a new endpoint), the second is not: nothing applies,
    not even the first (this used to leave the first swapped and the version bumped)."""
    two = Snapshot(1, "web", "web-1",
                   (ListenerConfig("api", "outbound", "127.0.0.1", 0),),
                   {"outbound:api": ClusterConfig("api", (Endpoint("e1", "127.0.0.1", 9),)),
                    "outbound:db": ClusterConfig("db", (Endpoint("d1", "127.0.0.1", 10),))})
    sidecar.snapshot = two  # as if it had started with both clusters
    _, before, _ = await call("GET", f"{admin}/config")
    for broken in ({"weight": "heavy"}, {"port": 70000}, {"healthy": "yes"}, {"id": 5}):
        pushed = two.to_dict()
        pushed["version"] = 2
        pushed["clusters"]["outbound:api"]["endpoints"][0]["port"] = 11
        pushed["clusters"]["outbound:db"]["endpoints"][0].update(broken)
        status, reply, _ = await call("PUT", f"{admin}/config", json=pushed)
        assert status == 400, broken
        assert_error(reply, "invalid", "endpoints")
        _, after, _ = await call("GET", f"{admin}/config")
        assert after == before
        assert [e.port for e in sidecar.clusters["outbound:api"].config.endpoints] == [9]


@pytest.mark.parametrize("version", [2**53, 2**64, -1, True, 1.5, "2"])
async def test_a_version_out_of_range_is_refused(admin: str, sidecar: Sidecar,
                                                 version: object) -> None:
    status, reply, _ = await call("PUT", f"{admin}/config",
                                  json={**snapshot(2).to_dict(), "version": version})
    assert status == 400
    assert_error(reply, "invalid", "version")
    status, reply, _ = await call("PUT", f"{admin}/config", json=snapshot(2).to_dict())
    assert (status, reply) == (200, {"applied": True, "version": 2})  # not pinned


# -- bounds on what a client sends -------------------------------------------------------


def reply_of(raw: bytes) -> tuple[int, Any]:
    head, _, body = raw.partition(b"\r\n\r\n")
    return int(head.split(b" ")[1]), json.loads(body)


async def test_a_long_url_gets_414(admin: str) -> None:
    port = int(admin.rsplit(":", 1)[1])
    ok = await raw_exchange(port, b"GET /ready?" + b"a" * 8000 + b" HTTP/1.1\r\n"
                            b"Connection: close\r\n\r\n")
    assert ok.startswith(b"HTTP/1.1 200 ")
    status, body = reply_of(await raw_exchange(
        port, b"GET /ready?" + b"a" * 8200 + b" HTTP/1.1\r\n\r\n"))
    assert status == 414
    assert_error(body, "invalid")
    # A URL that never ends is cut off at the bound, not gathered.
    status, _ = reply_of(await raw_exchange(port, b"GET /" + b"a" * 1_000_000))
    assert status == 414


async def test_a_large_head_or_too_many_fields_get_431(admin: str) -> None:
    port = int(admin.rsplit(":", 1)[1])
    fields = b"".join(b"X-F%d: %b\r\n" % (i, b"v" * 600) for i in range(99))
    ok = await raw_exchange(port, b"GET /ready HTTP/1.1\r\nConnection: close\r\n" + fields
                            + b"\r\n")
    assert ok.startswith(b"HTTP/1.1 200 ")  # 100 fields, about 60 KiB: allowed
    for head in (
            b"".join(b"X-F%d: v\r\n" % i for i in range(101)),       # 101 fields
            b"X-Big: " + b"v" * (65 * 1024) + b"\r\n",               # one field, 65 KiB
            b"".join(b"X-F%d: %b\r\n" % (i, b"v" * 700) for i in range(95)),  # 66 KiB
            b"X-Endless: " + b"v" * 1_000_000):                     # never ends
        status, body = reply_of(await raw_exchange(port, b"GET /ready HTTP/1.1\r\n" + head
                                                   + b"\r\n"))
        assert status == 431
        assert_error(body, "invalid")


async def test_a_head_sent_slowly_is_still_bounded(sidecar: Sidecar) -> None:
    """httptools joins a field's value before calling back: bytes are fed in slices and
    counted, so a value that grows a little at a time is refused at the bound."""
    server = await admin_for(sidecar)
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", int(server.address))
        writer.write(b"GET /ready HTTP/1.1\r\nX-Slow: ")
        for _ in range(80):
            writer.write(b"v" * 1024)
            await writer.drain()
        raw = await reader.read(-1)
        writer.close()
        status, _ = reply_of(raw)
        assert status == 431
        await async_wait_until(lambda: as_awaitable(not server.connections), 10,
                               "the refused connection to close")
    finally:
        await server.stop()


async def test_pipelining_without_reading_is_bounded(sidecar: Sidecar) -> None:
    """A client that sends many requests and reads no answer: the connection stops
    reading once its write buffer is over the high-water mark, so the sidecar holds a
    bounded amount; when the client reads, every answer comes, in order."""
    server = await admin_for(sidecar)
    count = 20_000
    client = socket.socket()
    client.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    client.connect(("127.0.0.1", int(server.address)))
    client.setblocking(False)
    loop = asyncio.get_running_loop()
    try:
        request = b"GET /config HTTP/1.1\r\nHost: x\r\n\r\n"
        sending = loop.create_task(loop.sock_sendall(client, request * count))
        await async_wait_until(
            lambda: as_awaitable(any(c.writing_paused for c in server.connections)),
            10, "the connection to pause")
        (conn,) = server.connections
        assert conn.transport is not None
        answer = encode(AdminApi(sidecar).get_config(None), True)  # type: ignore[arg-type]
        buffered = conn.transport.get_write_buffer_size()
        assert WRITE_HIGH_WATER <= buffered <= WRITE_HIGH_WATER + len(answer)
        assert len(conn.waiting) * len(request) <= 1024 * 1024  # at most one read's worth
        received: list[bytes] = []
        size = 0
        while size < count * len(answer):
            received.append(await loop.sock_recv(client, 1 << 20))
            size += len(received[-1])
            assert conn.transport.get_write_buffer_size() <= WRITE_HIGH_WATER + len(answer)
        await sending
        assert b"".join(received) == answer * count  # every answer, in order
    finally:
        client.close()
        await server.stop()


async def as_awaitable(value: bool) -> bool:
    return value

"""Mutual TLS between two real sidecars: the caller's outbound listener speaks TLS 1.3 to
the destination's inbound listener, which forwards plaintext to its app. Refused: a
plaintext caller, one with no certificate, one from another CA, an expired one, and a
destination that is not the service meant. A renewed certificate is used by the next
handshakes and drops no request."""

from __future__ import annotations

import asyncio
import datetime
import logging
import ssl
from collections.abc import AsyncIterator
from dataclasses import dataclass, replace
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web

from meshlet.errors import ConfigError
from meshlet.intention_rules import Intention
from meshlet.observe.exposition import render
from meshlet.proxy.config import (
    ClusterConfig,
    Endpoint,
    IntentionsConfig,
    ListenerConfig,
    Snapshot,
    TlsConfig,
)
from meshlet.proxy.sidecar import Sidecar
from tests.integration.test_proxy_http import start_backend
from tests.mesh_certs import NOW, MeshCa, spiffe
from tests.request_series import request_series


def destination_snapshot(app_port: int, tls: TlsConfig, version: int = 0,
                         service: str = "web") -> Snapshot:
    return Snapshot(version, service, f"{service}-0",
                    (ListenerConfig(service, "inbound", "127.0.0.1", 0),),
                    {f"inbound:{service}": ClusterConfig(
                        service, (Endpoint(f"{service}-0", "127.0.0.1", app_port),),
                        {"retries": 0})},
                    tls=tls)


def caller_snapshot(inbound_ports: list[int], tls: TlsConfig, version: int = 0,
                    **settings: object) -> Snapshot:
    endpoints = tuple(Endpoint(f"web-{p}", "127.0.0.1", p) for p in inbound_ports)
    return Snapshot(version, "client", "client-0",
                    (ListenerConfig("web", "outbound", "127.0.0.1", 0),),
                    {"outbound:web": ClusterConfig("web", endpoints, dict(settings))},
                    tls=tls)


@dataclass
class Mesh:
    ca: MeshCa
    app: web.AppRunner
    destination: Sidecar
    caller: Sidecar

    @property
    def inbound(self) -> int:
        return self.destination.ports()["inbound:web"]

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.caller.ports()['outbound:web']}/"


@pytest.fixture
async def mesh(tmp_path: Path) -> AsyncIterator[Mesh]:
    ca = MeshCa.make(tmp_path)
    app, app_port = await start_backend("web-app")
    destination = Sidecar(destination_snapshot(app_port, ca.tls("web")))
    await destination.start()
    caller = Sidecar(caller_snapshot([destination.ports()["inbound:web"]], ca.tls("client")))
    await caller.start()
    yield Mesh(ca, app, destination, caller)
    await caller.stop(0)
    await destination.stop(0)
    await app.cleanup()


def client_context(roots: Path, cert: tuple[Path, Path] | None) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=str(roots))
    context.check_hostname = False
    if cert is not None:
        context.load_cert_chain(*map(str, cert))
    return context


async def raw_request(port: int, context: ssl.SSLContext | None) -> bytes:
    """One GET straight to ``port`` (TLS with ``context``); what came back, b"" if the
    connection was refused or closed."""
    try:
        reader, writer = await asyncio.wait_for(
            asyncio.open_connection("127.0.0.1", port, ssl=context), 5)
        writer.write(b"GET / HTTP/1.1\r\nHost: web\r\nConnection: close\r\n\r\n")
        answer = await asyncio.wait_for(reader.read(), 5)
        writer.close()
        return answer
    except (ssl.SSLError, ConnectionError):
        return b""


async def test_requests_cross_the_mesh_in_mutual_tls(mesh: Mesh) -> None:
    async with aiohttp.ClientSession() as session:
        for _ in range(3):  # kept alive: one handshake, then the pooled connection
            async with session.get(mesh.url) as resp:
                assert resp.status == 200
                assert (await resp.json())["backend"] == "web-app"
    assert mesh.caller.clusters["outbound:web"].pool.connections == 1
    # What the caller reached is the destination's sidecar, proving the service meant.
    _, writer = await asyncio.open_connection(
        "127.0.0.1", mesh.inbound,
        ssl=client_context(mesh.ca.roots_file, mesh.ca.leaf("client", "-probe")))
    ssl_object = writer.get_extra_info("ssl_object")
    assert ssl_object.version() == "TLSv1.3"
    assert ssl_object.selected_alpn_protocol() is None  # the probe offered none
    assert ("URI", spiffe("web")) in writer.get_extra_info("peercert")["subjectAltName"]
    writer.close()


async def test_both_sidecars_name_the_service_pair_in_their_request_series(
        mesh: Mesh) -> None:
    """The caller's sidecar knows its own service; the destination's reads the caller's
    from its certificate, and names its own instance as the one that answered."""
    async with aiohttp.ClientSession() as session:
        for _ in range(3):
            async with session.get(mesh.url) as resp:
                assert resp.status == 200
    sent = request_series(render(mesh.caller.metrics.registry).decode())
    served = request_series(render(mesh.destination.metrics.registry).decode())
    assert sent == [({"direction": "outbound", "source": "client", "destination": "web",
                      "destination_instance": f"web-{mesh.inbound}", "code": "200",
                      "response_class": "2xx", "reason": "", "grpc_status": ""}, 3.0)]
    assert served == [({"direction": "inbound", "source": "client", "destination": "web",
                        "destination_instance": "web-0", "code": "200",
                        "response_class": "2xx", "reason": "", "grpc_status": ""}, 3.0)]


async def test_callers_without_a_valid_certificate_are_refused(
        mesh: Mesh, tmp_path: Path) -> None:
    other = MeshCa.make(tmp_path, "other")
    expired = mesh.ca.leaf("client", "-expired", not_before=NOW - datetime.timedelta(days=4),
                           not_after=NOW - datetime.timedelta(days=1))
    good = mesh.ca.leaf("client", "-good")
    assert b"200 OK" in await raw_request(mesh.inbound, client_context(mesh.ca.roots_file, good))
    assert await raw_request(mesh.inbound, None) == b""  # plaintext
    assert await raw_request(mesh.inbound, client_context(mesh.ca.roots_file, None)) == b""
    # Another CA's leaf: the caller trusts the destination, the destination not it.
    cross = client_context(mesh.ca.roots_file, other.leaf("client"))
    assert await raw_request(mesh.inbound, cross) == b""
    assert await raw_request(mesh.inbound, client_context(mesh.ca.roots_file, expired)) == b""


async def test_a_destination_that_is_not_the_service_meant_is_refused(
        mesh: Mesh, tmp_path: Path) -> None:
    """The caller's `web` endpoints include a sidecar of `db` (same CA): its requests
    never go there, and with only that one, they are answered tls_identity."""
    db_app, db_port = await start_backend("db-app")
    db = Sidecar(destination_snapshot(db_port, mesh.ca.tls("db"), service="db"))
    await db.start()
    impostor = db.ports()["inbound:db"]
    caller = Sidecar(caller_snapshot([impostor], mesh.ca.tls("client", "-2"), retries=0))
    await caller.start()
    try:
        url = f"http://127.0.0.1:{caller.ports()['outbound:web']}/"
        async with aiohttp.ClientSession() as session, session.get(url) as resp:
            assert resp.status == 503
            assert resp.headers["x-meshlet-error"] == "tls_identity"
        both = caller_snapshot([impostor, mesh.inbound], mesh.ca.tls("client", "-2"), 1,
                               retries=2)
        assert caller.apply(both)
        async with aiohttp.ClientSession() as session:
            for _ in range(6):
                async with session.get(url) as resp:
                    assert resp.status == 200
                    assert (await resp.json())["backend"] == "web-app"
    finally:
        await caller.stop(0)
        await db.stop(0)
        await db_app.cleanup()


async def test_a_renewed_certificate_serves_the_next_handshakes_and_drops_nothing(
        mesh: Mesh) -> None:
    renewed = mesh.ca.tls("web", "-renewed")
    old = mesh.destination.snapshot
    stop = asyncio.Event()
    answers: list[int] = []

    async def load() -> None:
        async with aiohttp.ClientSession() as session:
            while not stop.is_set() or len(answers) < 50:
                async with session.get(mesh.url) as resp:
                    answers.append(resp.status)
                    await resp.read()

    driver = asyncio.create_task(load())
    while len(answers) < 20:
        await asyncio.sleep(0.01)
    assert mesh.destination.apply(replace(old, version=1, tls=renewed))
    probe = client_context(mesh.ca.roots_file, mesh.ca.leaf("client", "-probe"))
    _, writer = await asyncio.open_connection("127.0.0.1", mesh.inbound, ssl=probe)
    served = writer.get_extra_info("ssl_object").getpeercert(binary_form=True)
    writer.close()
    assert served == ssl.PEM_cert_to_DER_cert(Path(renewed.cert).read_text())
    caller_old = mesh.caller.snapshot
    assert mesh.caller.apply(replace(caller_old, version=1, tls=mesh.ca.tls("client", "-r")))
    stop.set()
    await asyncio.wait_for(driver, 30)
    assert set(answers) == {200}


async def test_a_certificate_that_cannot_be_loaded_changes_nothing(
        mesh: Mesh, tmp_path: Path) -> None:
    before = mesh.destination.snapshot
    missing = replace(before.tls, cert=str(tmp_path / "absent.crt"), serial="x")  # type: ignore[type-var]
    with pytest.raises(ConfigError, match="cannot load the workload's certificate"):
        mesh.destination.apply(replace(before, version=5, tls=missing))
    mismatched = replace(before.tls, key=str(mesh.ca.leaf("web", "-other")[1]),  # type: ignore[type-var]
                         serial="y")
    with pytest.raises(ConfigError, match="tls"):
        mesh.destination.apply(replace(before, version=5, tls=mismatched))
    with pytest.raises(ConfigError, match="cannot be turned on or off"):
        mesh.destination.apply(replace(before, version=5, tls=None))
    assert mesh.destination.snapshot is before
    async with aiohttp.ClientSession() as session, session.get(mesh.url) as resp:
        assert resp.status == 200


def test_the_tls_block_is_validated() -> None:
    base = {"version": 1, "listeners": [], "clusters": {}}
    good = {"cert": "/a.crt", "key": "/a.key", "roots": "/r.pem",
            "trust_domain": "c1.meshlet"}
    assert Snapshot.from_dict({**base, "tls": good}).tls == TlsConfig(
        "/a.crt", "/a.key", "/r.pem", "c1.meshlet")
    assert Snapshot.from_dict(base).tls is None
    for bad in ({**good, "cert": "relative.crt"}, {**good, "trust_domain": "Bad Domain"},
                {**good, "namespace": "x/y"}, {**good, "extra": 1}, "tls", [good]):
        with pytest.raises(ConfigError) as info:
            Snapshot.from_dict({**base, "tls": bad})
        assert info.value.field == "tls"


def with_intentions(snapshot: Snapshot, version: int, default: str,
                    *rules: dict[str, object]) -> Snapshot:
    return replace(snapshot, version=version, intentions=IntentionsConfig(
        default, tuple(Intention.from_dict(r) for r in rules)))


async def get(session: aiohttp.ClientSession, url: str, method: str = "GET"
              ) -> tuple[int, str, str]:
    async with session.request(method, url) as resp:
        return resp.status, resp.headers.get("x-meshlet-error", ""), await resp.text()


async def test_a_live_deny_takes_effect_on_the_next_request_and_an_allow_restores_it(
        mesh: Mesh, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="meshlet.access")
    base = mesh.destination.snapshot
    async with aiohttp.ClientSession() as session:  # one kept-alive connection
        assert (await get(session, mesh.url))[0] == 200
        mesh.destination.apply(with_intentions(
            base, 1, "allow", {"source": "client", "destination": "web", "action": "deny"}))
        status, reason, body = await get(session, mesh.url)
        assert (status, reason) == (403, "intention_denied")
        assert "client may not call web: client => web deny" in body
        assert any('"direction":"inbound","source":"client","destination":"web"' in
                   r.getMessage() and '"status":403,"reason":"intention_denied"' in
                   r.getMessage() for r in caplog.records)  # the access-log line
        mesh.destination.apply(with_intentions(
            base, 2, "deny", {"source": "*", "destination": "web", "action": "allow"}))
        assert (await get(session, mesh.url))[0] == 200
        mesh.destination.apply(with_intentions(base, 3, "deny"))  # no intention: default
        assert (await get(session, mesh.url))[:2] == (403, "intention_denied")
    metrics = render(mesh.destination.metrics.registry).decode()
    assert 'meshlet_proxy_intention_denied_total{destination="web",direction="inbound",' \
        'source="client"} 2.0' in metrics


async def test_l7_intentions_match_path_methods_and_headers(mesh: Mesh) -> None:
    mesh.destination.apply(with_intentions(
        mesh.destination.snapshot, 1, "deny",
        {"source": "client", "destination": "web", "permissions": [
            {"action": "deny", "http": {"path_prefix": "/admin"}},
            {"action": "allow", "http": {"path_prefix": "/v1/", "methods": ["GET"]}}]}))
    root = mesh.url.rstrip("/")
    async with aiohttp.ClientSession() as session:
        assert (await get(session, root + "/v1/items"))[0] == 200
        assert (await get(session, root + "/v1/items", "POST"))[:2] == (
            403, "intention_denied")
        assert (await get(session, root + "/admin/v1/"))[0] == 403
        status, _, body = await get(session, root + "/other")
        assert status == 403 and "no permission matched, default deny" in body


async def test_tcp_intentions_refuse_a_connection_and_close_one_a_deny_names(
        tmp_path: Path) -> None:
    ca = MeshCa.make(tmp_path)
    echo = await asyncio.start_server(echo_back, "127.0.0.1", 0)
    app_port = echo.sockets[0].getsockname()[1]
    snapshot = Snapshot(0, "db", "db-0", (ListenerConfig("db", "inbound", "127.0.0.1", 0,
                                                         "tcp"),),
                        {"inbound:db": ClusterConfig("db", (Endpoint("db-0", "127.0.0.1",
                                                                      app_port),))},
                        tls=ca.tls("db"))
    db = Sidecar(snapshot)
    await db.start()
    port = db.ports()["inbound:db"]
    context = client_context(ca.roots_file, ca.leaf("client"))
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", port, ssl=context)
        writer.write(b"ping")
        assert await reader.readexactly(4) == b"ping"
        db.apply(with_intentions(snapshot, 1, "allow",
                                 {"source": "client", "destination": "db", "action": "deny"}))
        assert await asyncio.wait_for(reader.read(), 5) == b""  # the open one is closed
        writer.close()
        assert await raw_echo(port, context) == b""  # and a new one refused
        db.apply(with_intentions(snapshot, 2, "allow"))
        assert await raw_echo(port, context) == b"ping"
    finally:
        await db.stop(0)
        echo.close()


async def echo_back(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    while data := await reader.read(100):
        writer.write(data)
    writer.close()


async def raw_echo(port: int, context: ssl.SSLContext) -> bytes:
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", port, ssl=context)
        writer.write(b"ping")
        got = await asyncio.wait_for(reader.read(4), 5)
        writer.close()
        return got
    except (ssl.SSLError, ConnectionError):
        return b""

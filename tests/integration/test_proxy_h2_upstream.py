"""The sidecar's HTTP/2 to an upstream (`protocol: http2`) against a raw `h2` server the
test controls: requests share one connection, a stream the server refuses is retried,
a GOAWAY moves new requests to a new connection, and a server that breaks the protocol
fails only its own requests; a peer that will not agree to h2 by ALPN is named."""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import h2.config
import h2.connection
import h2.errors
import h2.events
import httpx

from meshlet.proxy.config import ListenerConfig
from meshlet.proxy.sidecar import Sidecar
from tests.integration.test_proxy_http import start_sidecar
from tests.integration.test_proxy_mtls import caller_snapshot
from tests.mesh_certs import MeshCa

Answer = Callable[["RawH2Server", h2.connection.H2Connection, int], bool]


def ok(server: RawH2Server, conn: h2.connection.H2Connection, stream_id: int) -> bool:
    conn.send_headers(stream_id, [(b":status", b"200"), (b"content-length", b"2")])
    conn.send_data(stream_id, b"ok", end_stream=True)
    return True


@dataclass
class RawH2Server:
    """An h2c server; ``answer`` decides each stream's fate (True: answered)."""

    answer: Answer = ok
    connections: int = 0
    streams: list[int] = field(default_factory=list)
    port: int = 0
    server: Any = None

    async def start(self) -> None:
        self.server = await asyncio.start_server(self.serve, "127.0.0.1", 0)
        self.port = self.server.sockets[0].getsockname()[1]

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        conn = h2.connection.H2Connection(h2.config.H2Configuration(
            client_side=False, header_encoding=None))
        conn.initiate_connection()
        writer.write(conn.data_to_send())
        try:
            while data := await reader.read(65536):
                for event in conn.receive_data(data):
                    if isinstance(event, h2.events.RequestReceived):
                        self.streams.append(event.stream_id)
                        self.answer(self, conn, event.stream_id)
                writer.write(conn.data_to_send())
        except (ConnectionError, h2.exceptions.ProtocolError):
            pass
        finally:
            writer.close()

    def close(self) -> None:
        self.server.close()


async def through(answer: Answer = ok) -> tuple[RawH2Server, Sidecar]:
    server = RawH2Server(answer)
    await server.start()
    sidecar = await start_sidecar(server.port, protocol="http2")
    return server, sidecar


def url(sidecar: Sidecar) -> str:
    return f"http://127.0.0.1:{sidecar.ports()['outbound:web']}/x"


async def test_requests_share_one_upstream_connection() -> None:
    server, sidecar = await through()
    try:
        async with httpx.AsyncClient() as client:  # HTTP/1.1 callers, translated
            for _ in range(5):
                assert (await client.get(url(sidecar))).text == "ok"
            answers = await asyncio.gather(*[client.get(url(sidecar)) for _ in range(20)])
        assert {a.status_code for a in answers} == {200}
        assert server.connections == 1
        assert len(server.streams) == 25 and len(set(server.streams)) == 25
    finally:
        await sidecar.stop(0)
        server.close()


async def test_a_refused_stream_is_retried_at_once() -> None:
    def refuse_first(server: RawH2Server, conn: h2.connection.H2Connection,
                     stream_id: int) -> bool:
        if len(server.streams) == 1:
            conn.reset_stream(stream_id, h2.errors.ErrorCodes.REFUSED_STREAM)
            return False
        return ok(server, conn, stream_id)

    server, sidecar = await through(refuse_first)
    try:
        async with httpx.AsyncClient() as client:
            answer = await client.post(url(sidecar), content=b"a body")  # even a POST
        assert (answer.status_code, answer.text) == (200, "ok")
        assert len(server.streams) == 2
    finally:
        await sidecar.stop(0)
        server.close()


async def test_after_a_goaway_new_requests_take_a_new_connection() -> None:
    def goaway_after_answer(server: RawH2Server, conn: h2.connection.H2Connection,
                            stream_id: int) -> bool:
        ok(server, conn, stream_id)
        if len(server.streams) == 1:
            conn.close_connection(last_stream_id=stream_id)
        return True

    server, sidecar = await through(goaway_after_answer)
    try:
        async with httpx.AsyncClient() as client:
            assert (await client.get(url(sidecar))).text == "ok"
            assert (await client.get(url(sidecar))).text == "ok"
        assert server.connections == 2
    finally:
        await sidecar.stop(0)
        server.close()


async def test_a_server_that_breaks_the_protocol_fails_its_requests_not_the_sidecar() -> None:
    state = {"broken": True}

    def garbage(server: RawH2Server, conn: h2.connection.H2Connection,
                stream_id: int) -> bool:
        if state["broken"]:
            # WINDOW_UPDATE on the connection with an increment of 0: a protocol error
            conn._data_to_send += b"\x00\x00\x04\x08\x00\x00\x00\x00\x00" + bytes(4)
            return False
        return ok(server, conn, stream_id)

    server, sidecar = await through(garbage)
    try:
        async with httpx.AsyncClient() as client:
            failed = await client.get(url(sidecar))
            assert failed.status_code == 502
            assert failed.headers["x-meshlet-error"] == "upstream_reset"
            state["broken"] = False
            assert (await client.get(url(sidecar))).text == "ok"
    finally:
        await sidecar.stop(0)
        server.close()


async def test_a_peer_that_will_not_speak_h2_fails_the_connect_by_name(tmp_path: Path) -> None:
    """A destination whose TLS offers only `http/1.1` by ALPN (an older sidecar) proves
    the right identity, but an HTTP/2 service cannot be spoken to it: `h2_unsupported`."""
    ca = MeshCa.make(tmp_path)
    served = ca.tls("web")
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(served.cert, served.key)
    context.load_verify_locations(served.roots)
    context.verify_mode = ssl.CERT_REQUIRED
    context.set_alpn_protocols(["http/1.1"])

    async def http1_only(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read()
        writer.close()

    server = await asyncio.start_server(http1_only, "127.0.0.1", 0, ssl=context)
    port = server.sockets[0].getsockname()[1]
    sidecar = Sidecar(caller_snapshot([port], ca.tls("client")))
    sidecar.snapshot = replace(sidecar.snapshot, listeners=(
        ListenerConfig("web", "outbound", "127.0.0.1", 0, "http2"),))
    await sidecar.start()
    try:
        async with httpx.AsyncClient() as client:
            answer = await client.get(f"http://127.0.0.1:{sidecar.ports()['outbound:web']}/")
        assert answer.status_code == 503
        assert answer.headers["x-meshlet-error"] == "h2_unsupported"
    finally:
        await sidecar.stop(0)
        server.close()

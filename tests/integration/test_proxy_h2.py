"""HTTP/2 from the client (h2c with prior knowledge, or `Upgrade: h2c`) through a real
sidecar to HTTP/1.1 backends: `httpx`, `curl` (--http2-prior-knowledge, --http2) and
Debian's `h2load` as clients, and a raw `h2` client
for what they do not show (GOAWAY, resets, settings, trailers). Every stream of one
connection is balanced on its own, bodies cross both ways under flow control, a stream's
timeout or reset leaves the others alone, and a drain ends the connection with GOAWAY."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import random
import shutil
import subprocess
from collections import Counter
from collections.abc import AsyncIterator, Callable
from typing import Any

import h2.config
import h2.connection
import h2.events
import h2.settings
import httpx
import pytest
from hyperframe.frame import Frame, GoAwayFrame, SettingsFrame

from meshlet.observe.exposition import render
from meshlet.proxy.sidecar import Sidecar
from tests.integration.test_proxy_http import running_backends, start_raw_backend, start_sidecar
from tests.request_series import request_count, request_series


@pytest.fixture
async def backends() -> AsyncIterator[list[int]]:
    async with running_backends(3) as ports:
        yield ports


@pytest.fixture
async def sidecar(backends: list[int]) -> AsyncIterator[Sidecar]:
    proxy = await start_sidecar(*backends)
    yield proxy
    await proxy.stop(1)


def base(sidecar: Sidecar) -> str:
    return f"http://127.0.0.1:{sidecar.ports()['outbound:web']}"


def h2_client() -> httpx.AsyncClient:
    return httpx.AsyncClient(http1=False, http2=True, timeout=30)


async def test_streams_of_one_connection_are_balanced_one_by_one(sidecar: Sidecar) -> None:
    async with h2_client() as client:
        answers = await asyncio.gather(*[client.get(f"{base(sidecar)}/items?i={i}")
                                         for i in range(30)])
    assert {a.http_version for a in answers} == {"HTTP/2"}
    assert {a.status_code for a in answers} == {200}
    # Round robin over one client connection: each backend got a third of the streams.
    assert Counter(a.json()["backend"] for a in answers) == {"b0": 10, "b1": 10, "b2": 10}
    assert {a.json()["path"] for a in answers} == {f"/items?i={i}" for i in range(30)}
    text = render(sidecar.metrics.registry).decode()
    assert request_count(text, direction="outbound", destination="web", code="200") == 30


async def test_bodies_cross_both_ways_under_flow_control(sidecar: Sidecar) -> None:
    body = bytes(range(256)) * 4096  # 1 MiB: sixteen times the default stream window
    async with h2_client() as client:
        async def streamed() -> AsyncIterator[bytes]:
            for i in range(0, len(body), 65536):
                yield body[i:i + 65536]

        up = await client.post(f"{base(sidecar)}/upload", content=streamed())
        assert up.json()["length"] == len(body)
        assert up.json()["te"] == "chunked"  # no length given: chunked to HTTP/1.1
        sized = await client.post(f"{base(sidecar)}/sized", content=body)
        assert sized.json()["length"] == len(body) and sized.json()["te"] is None
        down = await client.get(f"{base(sidecar)}/big?size={3 * 1024 * 1024}")
        assert len(down.content) == 3 * 1024 * 1024 and set(down.content) == {ord("y")}
        chunked = await client.get(f"{base(sidecar)}/c?chunked=500")
        assert chunked.content == b"x" * 500_000


async def test_the_sidecars_own_errors_come_back_on_the_stream() -> None:
    sidecar = await start_sidecar()  # no endpoints
    try:
        async with h2_client() as client:
            answer = await client.get(f"{base(sidecar)}/")
        assert answer.status_code == 503 and answer.http_version == "HTTP/2"
        assert answer.headers["x-meshlet-error"] == "no_healthy_endpoint"
    finally:
        await sidecar.stop(1)


async def test_a_timed_out_stream_leaves_the_others_alone(backends: list[int]) -> None:
    sidecar = await start_sidecar(*backends, request_timeout="300ms")
    try:
        async with h2_client() as client:
            slow, fast = await asyncio.gather(client.get(f"{base(sidecar)}/?sleep=2"),
                                              client.get(f"{base(sidecar)}/"))
        assert (slow.status_code, slow.headers["x-meshlet-error"]) == (504, "request_timeout")
        assert fast.status_code == 200
    finally:
        await sidecar.stop(1)


@pytest.mark.skipif(shutil.which("curl") is None, reason="needs curl (Debian's curl)")
async def test_curl_with_prior_knowledge(sidecar: Sidecar) -> None:
    out = await asyncio.to_thread(subprocess.run, [
        "curl", "-sS", "--http2-prior-knowledge", "-o", "/dev/null", "-w",
        "%{http_version} %{http_code}", f"{base(sidecar)}/curl"],
        capture_output=True, text=True, timeout=30, check=True)
    assert out.stdout == "2 200"


@pytest.mark.skipif(shutil.which("curl") is None, reason="needs curl (Debian's curl)")
async def test_curl_upgrading_to_h2c(sidecar: Sidecar) -> None:
    """`curl --http2` on an http:// URL asks `Upgrade: h2c`: answered on stream 1."""
    out = await asyncio.to_thread(subprocess.run, [
        "curl", "-sS", "--http2", "-w", "\n%{http_version} %{http_code}",
        f"{base(sidecar)}/upgraded"], capture_output=True, text=True, timeout=30, check=True)
    body, _, versions = out.stdout.rpartition("\n")
    assert versions == "2 200"
    assert json.loads(body)["path"] == "/upgraded"


async def test_an_h2c_upgrade_serves_stream_one_then_more_streams(sidecar: Sidecar) -> None:
    client = h2.connection.H2Connection(h2.config.H2Configuration(
        client_side=True, header_encoding=None))
    settings = client.initiate_upgrade_connection()
    reader, writer = await asyncio.open_connection("127.0.0.1", sidecar.ports()["outbound:web"])
    try:
        writer.write(b"GET /first HTTP/1.1\r\nHost: web\r\nConnection: Upgrade, HTTP2-Settings"
                     b"\r\nUpgrade: h2c\r\nHTTP2-Settings: " + settings + b"\r\n\r\n")
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
        assert head.startswith(b"HTTP/1.1 101 ") and b"upgrade: h2c" in head.lower()
        raw = RawH2(reader, writer, client)
        raw.flush()  # the client's preface, after the 101
        events = await raw.events(h2.events.StreamEnded)
        bodies = b"".join(e.data for e in events if isinstance(e, h2.events.DataReceived)
                          and e.stream_id == 1)
        assert json.loads(bodies)["path"] == "/first"
        sid = raw.request("/second")
        events = await raw.events(h2.events.StreamEnded)
        assert sid == 3
        assert any(isinstance(e, h2.events.ResponseReceived) and e.stream_id == 3
                   and dict(e.headers)[b":status"] == b"200" for e in events)
    finally:
        writer.close()


async def test_an_h2c_upgrade_with_a_body_is_declined_and_served_in_http1(
        sidecar: Sidecar) -> None:
    """The body would have to be read whole before switching: the upgrade is ignored
    (as a server may), the request served in HTTP/1.1 with its body, and the connection
    kept for the next request."""
    reader, writer = await asyncio.open_connection("127.0.0.1", sidecar.ports()["outbound:web"])
    try:
        writer.write(b"POST /posted HTTP/1.1\r\nHost: web\r\nConnection: Upgrade, HTTP2-Settings"
                     b"\r\nUpgrade: h2c\r\nHTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA\r\n"
                     b"Content-Length: 5\r\n\r\nhello"
                     b"GET /next HTTP/1.1\r\nHost: web\r\nConnection: close\r\n\r\n")
        answer = await asyncio.wait_for(reader.read(), 10)  # both answered, then closed
    finally:
        writer.close()
    first, _, second = answer.partition(b"HTTP/1.1 200")[2].partition(b"HTTP/1.1 200")
    assert answer.startswith(b"HTTP/1.1 200") and second, answer
    posted = json.loads(first.partition(b"\r\n\r\n")[2])
    assert (posted["method"], posted["path"], posted["length"]) == ("POST", "/posted", 5)
    assert posted["sha"] == hashlib.sha256(b"hello").hexdigest()
    assert json.loads(second.partition(b"\r\n\r\n")[2])["path"] == "/next"


@pytest.mark.skipif(shutil.which("curl") is None, reason="needs curl (Debian's curl)")
async def test_curl_posting_with_http2_gets_its_answer(sidecar: Sidecar) -> None:
    out = await asyncio.to_thread(subprocess.run, [
        "curl", "-sS", "--http2", "--data-binary", "abc", "-w", "\n%{http_code}",
        f"{base(sidecar)}/form"], capture_output=True, text=True, timeout=30, check=True)
    body, _, code = out.stdout.rpartition("\n")
    assert code == "200"
    assert (json.loads(body)["path"], json.loads(body)["length"]) == ("/form", 3)


@pytest.mark.parametrize(("head", "status"), [
    (b"GET / HTTP/1.1\r\nHost: web\r\nConnection: Upgrade\r\nUpgrade: h2c\r\n\r\n", b"400"),
    (b"GET / HTTP/1.1\r\nHost: web\r\nConnection: Upgrade, HTTP2-Settings\r\n"
     b"Upgrade: h2c\r\nHTTP2-Settings: %%%\r\n\r\n", b"400"),
])
async def test_an_h2c_upgrade_without_valid_settings_is_refused(
        head: bytes, status: bytes, sidecar: Sidecar) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", sidecar.ports()["outbound:web"])
    try:
        writer.write(head)
        answer = await asyncio.wait_for(reader.read(), 10)  # answered, then closed
        assert answer.startswith(b"HTTP/1.1 " + status)
    finally:
        writer.close()


@pytest.mark.skipif(shutil.which("h2load") is None, reason="needs h2load (nghttp2-client)")
async def test_h2load_streams_on_few_connections_all_succeed_and_spread(
        sidecar: Sidecar) -> None:
    """Debian's h2load: 600 requests, 4 connections × 10 concurrent streams."""
    out = await asyncio.to_thread(subprocess.run, [
        "h2load", "-n", "600", "-c", "4", "-m", "10", f"{base(sidecar)}/load"],
        capture_output=True, text=True, timeout=120, check=True)
    assert "600 succeeded, 0 failed, 0 errored" in out.stdout, out.stdout
    assert "status codes: 600 2xx" in out.stdout
    series = request_series(render(sidecar.metrics.registry).decode())
    shares = sorted(count for labels, count in series if labels["code"] == "200")
    assert shares == [200, 200, 200]  # three endpoints, round robin per stream


async def test_http1_still_works_on_the_same_listener(sidecar: Sidecar) -> None:
    async with httpx.AsyncClient() as client:
        answer = await client.get(f"{base(sidecar)}/one")
    assert answer.http_version == "HTTP/1.1" and answer.status_code == 200


class RawH2:
    """A minimal HTTP/2 client on the `h2` library, reading events as they come."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                 upgraded: h2.connection.H2Connection | None = None) -> None:
        self.reader, self.writer = reader, writer
        if upgraded is not None:  # after an `Upgrade: h2c`: its preface is queued already
            self.conn = upgraded
            return
        self.conn = h2.connection.H2Connection(h2.config.H2Configuration(
            client_side=True, header_encoding=None))
        self.conn.initiate_connection()
        self.flush()

    @classmethod
    async def open(cls, port: int) -> RawH2:
        return cls(*await asyncio.open_connection("127.0.0.1", port))

    def flush(self) -> None:
        self.writer.write(self.conn.data_to_send())

    def request(self, path: str, end: bool = True) -> int:
        sid = self.conn.get_next_available_stream_id()
        self.conn.send_headers(sid, [(b":method", b"GET"), (b":path", path.encode()),
                                     (b":scheme", b"http"), (b":authority", b"web")],
                               end_stream=end)
        self.flush()
        return sid

    async def events(self, until: type, timeout: float = 10) -> list[Any]:
        """Events until one of type ``until`` (or the connection closes)."""
        seen: list[Any] = []
        while True:
            data = await asyncio.wait_for(self.reader.read(65536), timeout)
            if not data:
                return seen
            for event in self.conn.receive_data(data):
                seen.append(event)
                if isinstance(event, h2.events.DataReceived):
                    self.conn.acknowledge_received_data(event.flow_controlled_length,
                                                        event.stream_id)
            self.flush()
            if any(isinstance(e, until) for e in seen):
                return seen

    def close(self) -> None:
        self.writer.close()


async def test_settings_bound_concurrent_streams_and_header_lists(sidecar: Sidecar) -> None:
    client = await RawH2.open(sidecar.ports()["outbound:web"])
    try:
        events = await client.events(h2.events.RemoteSettingsChanged)
        settings = next(e for e in events if isinstance(e, h2.events.RemoteSettingsChanged))
        changed = {code: s.new_value for code, s in settings.changed_settings.items()}
        assert changed[h2.settings.SettingCodes.MAX_CONCURRENT_STREAMS] == 100
        assert changed[h2.settings.SettingCodes.MAX_HEADER_LIST_SIZE] == 64 * 1024
    finally:
        client.close()


async def raw_frames(reader: asyncio.StreamReader, until: Callable[[list[Frame]], bool],
                     timeout: float = 10) -> list[Frame]:
    """The server's frames, decoded one by one, until ``until`` holds or EOF."""
    buffer, frames = b"", []
    while not until(frames):
        try:
            data = await asyncio.wait_for(reader.read(65536), timeout)
        except ConnectionResetError:
            break
        if not data:
            break
        buffer += data
        while len(buffer) >= 9:
            frame, length = Frame.parse_frame_header(memoryview(buffer[:9]))
            if len(buffer) < 9 + length:
                break
            frame.parse_body(memoryview(buffer[9:9 + length]))
            buffer = buffer[9 + length:]
            frames.append(frame)
    return frames


async def test_a_drain_sends_goaway_and_lets_open_streams_finish(sidecar: Sidecar) -> None:
    """Read as raw frames: `h2`'s own client ends its state machine at the first
    GOAWAY, as a graceful one does not mean."""
    client = await RawH2.open(sidecar.ports()["outbound:web"])
    try:
        sid = client.request("/?sleep=0.5")
        await raw_frames(client.reader, lambda f: any(isinstance(x, SettingsFrame) for x in f))
        sidecar.drain()
        frames = await raw_frames(client.reader, lambda f: False)  # until it closes
        kinds = [type(f).__name__ for f in frames]
        first_goaway = kinds.index("GoAwayFrame")
        assert frames[first_goaway].last_stream_id == sid  # type: ignore[attr-defined]
        assert frames[first_goaway].error_code == 0  # type: ignore[attr-defined]
        # After it, the open stream's response, whole, then the final GOAWAY and close.
        assert "HeadersFrame" in kinds[first_goaway:]
        assert any("END_STREAM" in f.flags and f.stream_id == sid
                   for f in frames[first_goaway:])
        assert kinds[-1] == "GoAwayFrame"
    finally:
        client.close()


async def test_a_stream_the_client_resets_is_dropped_upstream(sidecar: Sidecar) -> None:
    client = await RawH2.open(sidecar.ports()["outbound:web"])
    try:
        sid = client.request("/?sleep=2")
        listener = sidecar.listeners[0]
        deadline = asyncio.get_running_loop().time() + 10
        while listener.active_requests == 0:
            assert asyncio.get_running_loop().time() < deadline, "the request never started"
            await asyncio.sleep(0.01)
        client.conn.reset_stream(sid)
        client.flush()
        while listener.active_requests != 0:
            assert asyncio.get_running_loop().time() < deadline, "the reset stream lingers"
            await asyncio.sleep(0.01)
        other = client.request("/after")  # the connection goes on
        events = await client.events(h2.events.StreamEnded)
        assert any(isinstance(e, h2.events.StreamEnded) and e.stream_id == other
                   for e in events)
    finally:
        client.close()


async def test_a_client_that_resets_stream_after_stream_is_cut_off(sidecar: Sidecar) -> None:
    """The "rapid reset" attack: streams opened and reset at once, each starting an
    upstream request for nothing. Past 100 of them the connection ends."""
    client = await RawH2.open(sidecar.ports()["outbound:web"])
    try:
        for _ in range(150):
            sid = client.request("/?sleep=1", end=True)
            client.conn.reset_stream(sid)
        client.flush()
        frames = await raw_frames(client.reader, lambda f: False)  # until it closes
        goaways = [f for f in frames if isinstance(f, GoAwayFrame)]
        assert goaways and goaways[-1].error_code == 0xB  # ENHANCE_YOUR_CALM
    finally:
        client.close()


async def test_a_protocol_error_ends_the_connection_with_goaway(sidecar: Sidecar) -> None:
    client = await RawH2.open(sidecar.ports()["outbound:web"])
    try:
        client.writer.write(b"\x00\x00\x04\x08\x00\x00\x00\x00\x00\x00\x00\x00\x00")  # stream 0
        events = await client.events(h2.events.ConnectionTerminated)
        assert any(isinstance(e, h2.events.ConnectionTerminated) for e in events)
    finally:
        client.close()


async def test_trailers_of_a_chunked_response_are_passed_on() -> None:
    async def upstream(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nTrailer: x-sum\r\n\r\n"
                     b"5\r\nhello\r\n0\r\nx-sum: 42\r\n\r\n")
        await writer.drain()
        await reader.read()

    server, port = await start_raw_backend(upstream)
    sidecar = await start_sidecar(port)
    client = await RawH2.open(sidecar.ports()["outbound:web"])
    try:
        client.request("/t")
        events = await client.events(h2.events.StreamEnded)
        data = b"".join(e.data for e in events if isinstance(e, h2.events.DataReceived))
        trailers = [e for e in events if isinstance(e, h2.events.TrailersReceived)]
        assert data == b"hello"
        assert trailers and (b"x-sum", b"42") in trailers[0].headers
    finally:
        client.close()
        await sidecar.stop(1)
        server.close()


async def test_random_bytes_after_the_preface_never_break_the_sidecar(
        sidecar: Sidecar, caplog: pytest.LogCaptureFixture) -> None:
    """Fifty hostile connections: random frames after a valid preface. Each is answered
    or closed, and the sidecar goes on serving."""
    rng = random.Random(1729)
    port = sidecar.ports()["outbound:web"]
    for _ in range(50):
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        frames = b""
        for _ in range(5):  # whole frames (so none waits for more): any type, flags, id
            payload = rng.randbytes(rng.randrange(40))
            frames += len(payload).to_bytes(3, "big") + bytes(
                [rng.randrange(11), rng.randrange(256)]) + rng.randbytes(4) + payload
        writer.write(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + frames)
        with contextlib.suppress(ConnectionError, TimeoutError):
            while await asyncio.wait_for(reader.read(65536), 0.5):
                pass  # until the sidecar closes, or it waits for more
        writer.close()
    async with h2_client() as client:
        assert (await client.get(f"{base(sidecar)}/still")).status_code == 200
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR] == []

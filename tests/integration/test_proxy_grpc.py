"""A real gRPC client (`grpcio`) through the sidecar's HTTP/2: the errors the sidecar
makes itself reach it as gRPC statuses, with `x-meshlet-error` in the trailers."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import grpc
import h2.events
import pytest

from meshlet.proxy.sidecar import Sidecar
from tests.integration.test_proxy_h2 import RawH2
from tests.integration.test_proxy_http import start_raw_backend, start_sidecar


def call(sidecar: Sidecar, timeout: float = 30) -> Callable[[], bytes]:
    """A unary call through the sidecar's outbound listener (bytes in, bytes out)."""
    def run() -> bytes:
        target = f"127.0.0.1:{sidecar.ports()['outbound:web']}"
        with grpc.insecure_channel(target, options=[("grpc.enable_http_proxy", 0)]) as channel:
            method = channel.unary_unary("/demo.Echo/Say", request_serializer=bytes,
                                         response_deserializer=bytes)
            return method(b"hi", timeout=timeout)  # type: ignore[no-any-return]
    return run


async def failure(sidecar: Sidecar) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as failed:
        await asyncio.to_thread(call(sidecar))
    return failed.value


def meshlet_error(error: grpc.RpcError) -> str | None:
    return dict(error.trailing_metadata() or ()).get("x-meshlet-error")  # type: ignore[attr-defined]


async def test_no_endpoint_is_unavailable() -> None:
    sidecar = await start_sidecar()
    try:
        error = await failure(sidecar)
        assert error.code() == grpc.StatusCode.UNAVAILABLE  # type: ignore[attr-defined]
        assert error.details() == "meshlet: no_healthy_endpoint"  # type: ignore[attr-defined]
        assert meshlet_error(error) == "no_healthy_endpoint"
    finally:
        await sidecar.stop(1)


async def test_the_sidecars_timeout_is_deadline_exceeded() -> None:
    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read()  # takes the request, never answers

    server, port = await start_raw_backend(silent)
    sidecar = await start_sidecar(port, request_timeout="200ms")
    try:
        error = await failure(sidecar)  # the client would wait 30 s: the sidecar's 0.2 s ends it
        assert error.code() == grpc.StatusCode.DEADLINE_EXCEEDED  # type: ignore[attr-defined]
        assert meshlet_error(error) == "request_timeout"
    finally:
        await sidecar.stop(1)
        server.close()


async def test_the_callers_grpc_timeout_bounds_the_request() -> None:
    """`grpc-timeout: 200m` from the caller ends a call the route would let run 15 s."""
    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read()

    server, port = await start_raw_backend(silent)
    sidecar = await start_sidecar(port)  # request_timeout: the default 15 s
    client = await RawH2.open(sidecar.ports()["outbound:web"])
    try:
        sid = client.conn.get_next_available_stream_id()
        client.conn.send_headers(sid, [
            (b":method", b"POST"), (b":path", b"/demo.Echo/Say"), (b":scheme", b"http"),
            (b":authority", b"web"), (b"content-type", b"application/grpc"),
            (b"te", b"trailers"), (b"grpc-timeout", b"200m")])
        client.conn.send_data(sid, b"\x00\x00\x00\x00\x02hi", end_stream=True)
        client.flush()
        events = await client.events(h2.events.StreamEnded)
        answer = next(e for e in events if isinstance(e, h2.events.ResponseReceived))
        headers = dict(answer.headers)
        assert headers[b":status"] == b"200"
        assert headers[b"grpc-status"] == b"4"  # DEADLINE_EXCEEDED
        assert headers[b"x-meshlet-error"] == b"request_timeout"
    finally:
        client.close()
        await sidecar.stop(1)
        server.close()

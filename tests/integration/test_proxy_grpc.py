"""A real gRPC client (`grpcio`) through the sidecar's HTTP/2: the errors the sidecar
makes itself reach it as gRPC statuses, with `x-meshlet-error` in the trailers."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import grpc
import pytest

from meshlet.proxy.sidecar import Sidecar
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

"""Real gRPC (`grpcio` clients and servers) through two sidecars: the caller's outbound
listener takes h2c from the app and speaks h2 (ALPN) over mutual TLS to each replica's
sidecar, which speaks h2c to its gRPC server. Calls on one channel are balanced per
call across three replicas; unary and streaming calls, the server's own statuses and
trailers, a retry on UNAVAILABLE, a deadline, and routes and intentions on the method's
path."""

from __future__ import annotations

import asyncio
import json
import logging
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from concurrent import futures
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import pytest

from meshlet.observe.exposition import render
from meshlet.proxy.config import ClusterConfig, Endpoint, ListenerConfig, Snapshot
from meshlet.proxy.sidecar import Sidecar
from tests.integration.test_proxy_mtls import with_intentions
from tests.mesh_certs import MeshCa
from tests.request_series import request_count

SERVICE = "demo.Echo"


@dataclass
class Replica:
    """One gRPC server: answers with its name; ``failing`` makes it answer UNAVAILABLE."""

    name: str
    server: Any = None
    port: int = 0
    calls: int = 0
    failing: bool = False
    lock: threading.Lock = field(default_factory=threading.Lock)

    def count(self) -> None:
        with self.lock:
            self.calls += 1

    def say(self, request: bytes, context: grpc.ServicerContext) -> bytes:
        self.count()
        if self.failing:
            context.abort(grpc.StatusCode.UNAVAILABLE, f"{self.name} is down")
        if request.startswith(b"missing"):
            context.set_trailing_metadata((("where", self.name),))
            context.abort(grpc.StatusCode.NOT_FOUND, "no such thing")
        if request.startswith(b"slow"):
            time.sleep(2)
        return self.name.encode() + b":" + request

    def chat(self, requests: Iterator[bytes], context: grpc.ServicerContext) -> Iterator[bytes]:
        self.count()
        for request in requests:
            yield self.name.encode() + b":" + request

    def count_to(self, request: bytes, context: grpc.ServicerContext) -> Iterator[bytes]:
        self.count()
        for i in range(int(request)):
            yield b"%d" % i

    def start(self) -> None:
        handler = grpc.method_handlers_generic_handler(SERVICE, {
            "Say": grpc.unary_unary_rpc_method_handler(self.say),
            "Chat": grpc.stream_stream_rpc_method_handler(self.chat),
            "CountTo": grpc.unary_stream_rpc_method_handler(self.count_to),
        })
        self.server = grpc.server(futures.ThreadPoolExecutor(max_workers=4),
                                  handlers=[handler])
        self.port = self.server.add_insecure_port("127.0.0.1:0")
        self.server.start()


@dataclass
class GrpcMesh:
    replicas: list[Replica]
    destinations: list[Sidecar]
    caller: Sidecar

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.caller.ports()['outbound:echo']}"

    def channel(self) -> grpc.Channel:
        return grpc.insecure_channel(self.target, options=[("grpc.enable_http_proxy", 0)])


def destination(replica: Replica, ca: MeshCa, protocol: str = "grpc") -> Snapshot:
    return Snapshot(0, "echo", replica.name,
                    (ListenerConfig("echo", "inbound", "127.0.0.1", 0, protocol),),
                    {"inbound:echo": ClusterConfig(
                        "echo", (Endpoint(replica.name, "127.0.0.1", replica.port),),
                        {"retries": 0, "protocol": protocol})},
                    tls=ca.tls("echo"))


def caller(inbound_ports: list[int], ca: MeshCa, protocol: str = "grpc",
           **settings: object) -> Snapshot:
    endpoints = tuple(Endpoint(f"echo-{p}", "127.0.0.1", p) for p in inbound_ports)
    return Snapshot(0, "client", "client-0",
                    (ListenerConfig("echo", "outbound", "127.0.0.1", 0, protocol),),
                    {"outbound:echo": ClusterConfig("echo", endpoints,
                                                    {"protocol": protocol, **settings})},
                    tls=ca.tls("client"))


async def start_mesh(tmp_path: Path, protocol: str = "grpc", **settings: object) -> GrpcMesh:
    """Three replicas behind their sidecars and a caller's, every listener and cluster
    of ``protocol`` (``http``: a gRPC call is known by its content-type)."""
    ca = MeshCa.make(tmp_path)
    replicas = [Replica(f"echo-{i}") for i in range(3)]
    for replica in replicas:
        replica.start()
    destinations = [Sidecar(destination(r, ca, protocol)) for r in replicas]
    for sidecar in destinations:
        await sidecar.start()
    front = Sidecar(caller([s.ports()["inbound:echo"] for s in destinations], ca, protocol,
                           **settings))
    await front.start()
    return GrpcMesh(replicas, destinations, front)


async def stop_mesh(mesh: GrpcMesh) -> None:
    await mesh.caller.stop(0)
    for sidecar in mesh.destinations:
        await sidecar.stop(0)
    for replica in mesh.replicas:
        replica.server.stop(None).wait()


@pytest.fixture
async def mesh(tmp_path: Path) -> AsyncIterator[GrpcMesh]:
    mesh = await start_mesh(tmp_path)
    try:
        yield mesh
    finally:
        await stop_mesh(mesh)


def in_thread(fn: Callable[[], Any]) -> Any:
    return asyncio.to_thread(fn)


def unary(channel: grpc.Channel) -> Any:
    return channel.unary_unary(f"/{SERVICE}/Say")


async def failed_call(mesh: GrpcMesh, request: bytes, timeout: float) -> grpc.RpcError:
    """The error of a unary call that must fail."""
    def run() -> grpc.RpcError:
        with mesh.channel() as channel, pytest.raises(grpc.RpcError) as failed:
            unary(channel)(request, timeout=timeout)
        return failed.value
    return await in_thread(run)  # type: ignore[no-any-return]


async def test_unary_calls_on_one_channel_spread_over_three_replicas(mesh: GrpcMesh) -> None:
    def run() -> list[bytes]:
        with mesh.channel() as channel:
            say = unary(channel)
            return [say(b"n%d" % i, timeout=10) for i in range(30)]

    answers = await in_thread(run)
    assert sorted({a.split(b":")[0] for a in answers}) == [b"echo-0", b"echo-1", b"echo-2"]
    assert [r.calls for r in mesh.replicas] == [10, 10, 10]  # round robin, per call
    served = render(mesh.caller.metrics.registry).decode()
    assert request_count(served, direction="outbound", grpc_status="0") == 30
    assert answers[0].endswith(b":n0")
    # Over mTLS the destination names the caller by its certificate.
    served = render(mesh.destinations[0].metrics.registry).decode()
    assert request_count(served, direction="inbound", source="client", code="200") == 10


async def test_streaming_calls_carry_every_message_both_ways(mesh: GrpcMesh) -> None:
    def run() -> tuple[list[bytes], list[bytes]]:
        with mesh.channel() as channel:
            chat = channel.stream_stream(f"/{SERVICE}/Chat")
            echoed = list(chat(iter([b"a", b"b" * 100_000, b"c"]), timeout=10))
            counted = list(channel.unary_stream(f"/{SERVICE}/CountTo")(b"500", timeout=10))
            return echoed, counted

    echoed, counted = await in_thread(run)
    name = echoed[0].split(b":")[0]
    assert echoed == [name + b":a", name + b":" + b"b" * 100_000, name + b":c"]
    assert counted == [b"%d" % i for i in range(500)]


async def test_a_servers_status_and_trailers_reach_the_caller(
        mesh: GrpcMesh, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="meshlet.access")
    error = await failed_call(mesh, b"missing", 10)
    assert error.code() == grpc.StatusCode.NOT_FOUND
    assert error.details() == "no such thing"
    assert dict(error.trailing_metadata())["where"].startswith("echo-")
    assert "x-meshlet-error" not in dict(error.trailing_metadata())  # the server's own
    # Both sidecars count the call by its gRPC status, and log it (errors are logged).
    served = render(mesh.caller.metrics.registry).decode()
    assert request_count(served, direction="outbound", code="200", grpc_status="5") == 1
    assert sum(request_count(render(s.metrics.registry).decode(), direction="inbound",
                             grpc_status="5") for s in mesh.destinations) == 1
    logged = [json.loads(r.getMessage()) for r in caplog.records if r.name == "meshlet.access"]
    assert {line["direction"] for line in logged if line.get("grpc_status") == 5} == \
        {"inbound", "outbound"}


async def test_unavailable_is_retried_on_another_replica(tmp_path: Path) -> None:
    mesh = await start_mesh(tmp_path, retry_on="unavailable,resource-exhausted", retries=2)
    mesh.replicas[1].failing = True
    try:
        def run() -> list[bytes]:
            with mesh.channel() as channel:
                return [unary(channel)(b"x", timeout=10) for _ in range(12)]

        answers = await in_thread(run)
        assert len(answers) == 12  # none failed
        assert all(not a.startswith(b"echo-1") for a in answers)
        assert mesh.replicas[1].calls >= 1  # it was tried, and its UNAVAILABLE retried
        served = render(mesh.caller.metrics.registry).decode()
        assert "meshlet_proxy_retries_total" in served
    finally:
        await stop_mesh(mesh)


async def test_without_retry_on_the_unavailable_reaches_the_caller(mesh: GrpcMesh) -> None:
    mesh.replicas[0].failing = True

    def run() -> list[grpc.StatusCode]:
        codes = []
        with mesh.channel() as channel:
            for _ in range(3):
                try:
                    unary(channel)(b"x", timeout=10)
                    codes.append(grpc.StatusCode.OK)
                except grpc.RpcError as error:
                    codes.append(error.code())
        return codes

    codes = await in_thread(run)
    assert codes.count(grpc.StatusCode.UNAVAILABLE) == 1
    assert codes.count(grpc.StatusCode.OK) == 2


async def test_the_callers_deadline_ends_a_slow_call(mesh: GrpcMesh) -> None:
    error = await failed_call(mesh, b"slow", 0.3)
    assert error.code() == grpc.StatusCode.DEADLINE_EXCEEDED

    def after() -> bytes:  # the channel and the sessions under it still serve
        with mesh.channel() as channel:
            return unary(channel)(b"again", timeout=10)  # type: ignore[no-any-return]

    assert (await in_thread(after)).endswith(b":again")


async def test_routes_and_intentions_judge_a_call_by_its_method_path(tmp_path: Path) -> None:
    """A route's `path_prefix` names a gRPC method (`/demo.Echo/Say`): its 200 ms
    timeout ends a slow call whose caller would wait 10 s, and a service no route names
    is UNIMPLEMENTED; an L7 intention on the destination denies one method and lets
    the others through."""
    routes = [{"match": {"path_prefix": f"/{SERVICE}/Say"}, "timeout": "200ms"},
              {"match": {"path_prefix": f"/{SERVICE}/"}}]
    mesh = await start_mesh(tmp_path, routes=routes)
    try:
        slow = await failed_call(mesh, b"slow", 10)
        assert slow.code() == grpc.StatusCode.DEADLINE_EXCEEDED
        assert dict(slow.trailing_metadata())["x-meshlet-error"] == "request_timeout"
        for sidecar in mesh.destinations:
            assert sidecar.apply(with_intentions(
                sidecar.snapshot, 1, "allow", {"source": "client", "destination": "echo",
                                               "permissions": [{"action": "deny", "http": {
                                                   "path_prefix": f"/{SERVICE}/Chat"}}]}))

        def run() -> tuple[grpc.StatusCode, list[bytes]]:
            with mesh.channel() as channel:
                try:
                    list(channel.stream_stream(f"/{SERVICE}/Chat")(iter([b"a"]), timeout=10))
                    code = grpc.StatusCode.OK
                except grpc.RpcError as error:
                    code = error.code()
                counted = list(channel.unary_stream(f"/{SERVICE}/CountTo")(b"3", timeout=10))
                return code, counted

        code, counted = await in_thread(run)
        assert code == grpc.StatusCode.PERMISSION_DENIED
        assert counted == [b"0", b"1", b"2"]

        def unrouted() -> grpc.StatusCode:  # a service no route names
            with mesh.channel() as channel, pytest.raises(grpc.RpcError) as failed:
                channel.unary_unary("/other.Service/Call")(b"x", timeout=10)
            return failed.value.code()  # type: ignore[no-any-return]

        assert await in_thread(unrouted) == grpc.StatusCode.UNIMPLEMENTED
    finally:
        await stop_mesh(mesh)


async def test_on_http_listeners_a_call_known_by_its_content_type_goes_in_http2(
        tmp_path: Path) -> None:
    """Listeners and clusters declared plain ``http``: each gRPC call, known by its
    ``content-type``, still reaches its replica's sidecar in h2 over mTLS and its server
    in h2c (a gRPC server speaks nothing else), balanced per call, its UNAVAILABLE
    retried, its status counted."""
    mesh = await start_mesh(tmp_path, "http", retry_on="unavailable", retries=2)
    mesh.replicas[2].failing = True
    try:
        def run() -> tuple[list[bytes], list[bytes]]:
            with mesh.channel() as channel:
                answers = [unary(channel)(b"n%d" % i, timeout=10) for i in range(12)]
                counted = list(channel.unary_stream(f"/{SERVICE}/CountTo")(b"50", timeout=10))
                return answers, counted

        answers, counted = await in_thread(run)
        assert {a.split(b":")[0] for a in answers} == {b"echo-0", b"echo-1"}
        assert mesh.replicas[2].calls >= 1  # tried, its UNAVAILABLE retried elsewhere
        assert counted == [b"%d" % i for i in range(50)]
        served = render(mesh.caller.metrics.registry).decode()
        assert request_count(served, direction="outbound", grpc_status="0") == 13
        listener = mesh.caller.listeners[0]
        assert listener.connector is not listener.h2_connector()  # HTTP/1.1's stays its own
    finally:
        await stop_mesh(mesh)

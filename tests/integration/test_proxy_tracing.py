"""Tracing through real sidecars: an outbound and an inbound sidecar in front of an app,
exporting to an OTLP/HTTP receiver the test runs on loopback."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from meshlet.observe.exposition import render
from meshlet.proxy.config import ClusterConfig, Endpoint, ListenerConfig, Snapshot
from meshlet.proxy.sidecar import Sidecar
from meshlet.proxy.tracing import parse_traceparent

TRACE = "0af7651916cd43dd8448eb211c80319c"
PARENT = "b7ad6b7169203331"


class Receiver:
    """Records the bodies POSTed to /v1/traces; ``hold`` makes it answer slowly."""

    def __init__(self) -> None:
        self.bodies: list[dict[str, Any]] = []
        self.hold: asyncio.Event | None = None
        self.runner: web.AppRunner | None = None
        self.port = 0

    async def start(self) -> None:
        async def traces(request: web.Request) -> web.Response:
            assert request.content_type == "application/json"
            if self.hold is not None:
                await self.hold.wait()
            self.bodies.append(await request.json())
            return web.json_response({})
        app = web.Application()
        app.router.add_post("/v1/traces", traces)
        self.runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.5)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]

    def spans(self) -> list[tuple[str, dict[str, Any]]]:
        return [(resource["resource"]["attributes"][0]["value"]["stringValue"], span)
                for body in self.bodies for resource in body["resourceSpans"]
                for scope in resource["scopeSpans"] for span in scope["spans"]]


async def until(predicate: Any, what: str, timeout: float = 10.0) -> Any:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not (value := predicate()):
        if loop.time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.02)
    return value


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    r = Receiver()
    await r.start()
    yield r
    if r.hold is not None:
        r.hold.set()
    assert r.runner is not None
    await r.runner.cleanup()


@pytest.fixture
async def app() -> AsyncIterator[tuple[int, list[dict[str, str]]]]:
    seen: list[dict[str, str]] = []

    async def handle(request: web.Request) -> web.Response:
        seen.append({k.lower(): v for k, v in request.headers.items()})
        return web.Response(text="ok")
    application = web.Application()
    application.router.add_route("*", "/{tail:.*}", handle)
    runner = web.AppRunner(application, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    yield site._server.sockets[0].getsockname()[1], seen  # type: ignore[union-attr]
    await runner.cleanup()


def tracing(endpoint: str, **more: Any) -> dict[str, Any]:
    return {"tracing_endpoint": endpoint, "access_log": "all", **more}


async def mesh(app_port: int, endpoint: str) -> tuple[Sidecar, Sidecar]:
    """catalog's sidecar (inbound, to the app) and frontend's (outbound to catalog)."""
    inbound = Sidecar(Snapshot(1, "catalog", "catalog-0",
                               (ListenerConfig("catalog", "inbound", "127.0.0.1", 0),),
                               {"inbound:catalog": ClusterConfig(
                                   "catalog", (Endpoint("catalog-0", "127.0.0.1", app_port),),
                                   {"retries": 0, **tracing(endpoint)})}))
    await inbound.start()
    port = inbound.ports()["inbound:catalog"]
    outbound = Sidecar(Snapshot(1, "frontend", "frontend-0",
                                (ListenerConfig("catalog", "outbound", "127.0.0.1", 0),),
                                {"outbound:catalog": ClusterConfig(
                                    "catalog", (Endpoint("catalog-0", "127.0.0.1", port),),
                                    {"access_log": "all"}),
                                 "inbound:frontend": ClusterConfig(
                                     "frontend", (), tracing(endpoint))}))
    await outbound.start()
    return inbound, outbound


async def test_a_request_makes_a_client_and_a_server_span_of_one_trace(
        receiver: Receiver, app: tuple[int, list[dict[str, str]]],
        caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="meshlet.access")
    app_port, seen = app
    inbound, outbound = await mesh(app_port, f"http://127.0.0.1:{receiver.port}/")
    try:
        url = f"http://127.0.0.1:{outbound.ports()['outbound:catalog']}/items?q=1"
        async with aiohttp.ClientSession() as session:
            async with session.get(url) as response:
                assert response.status == 200
            spans = await until(lambda: len(receiver.spans()) >= 2 and receiver.spans(),
                                "two spans")
            by_kind = {span["kind"]: (service, span) for service, span in spans}
            (client_service, client), (server_service, server) = by_kind[3], by_kind[2]
            assert (client_service, server_service) == ("frontend", "catalog")
            assert client["traceId"] == server["traceId"]
            assert "parentSpanId" not in client  # a new trace: the client span is its root
            assert server["parentSpanId"] == client["spanId"]
            sent = parse_traceparent(seen[0]["traceparent"].encode())
            assert sent is not None
            assert (sent.trace_id.decode(), sent.parent_id.decode(), sent.flags) == (
                client["traceId"], server["spanId"], 1)
            attributes = {a["key"]: a["value"] for a in server["attributes"]}
            assert attributes["http.request.method"] == {"stringValue": "GET"}
            assert attributes["url.path"] == {"stringValue": "/items"}
            assert attributes["http.response.status_code"] == {"intValue": "200"}
            assert attributes["meshlet.endpoint"] == {"stringValue": "catalog-0"}
            assert int(client["endTimeUnixNano"]) >= int(client["startTimeUnixNano"]) > 0
            lines = [json.loads(r.getMessage()) for r in caplog.records
                     if r.name == "meshlet.access"]
            assert {line["trace_id"] for line in lines} == {client["traceId"]}
            assert {line["span_id"] for line in lines} == {client["spanId"], server["spanId"]}

            # A caller's traceparent is continued, its tracestate passed on unchanged.
            async with session.get(url, headers={
                    "traceparent": f"00-{TRACE}-{PARENT}-01", "tracestate": "k=v"}) as response:
                assert response.status == 200
            continued = await until(
                lambda: [s for _, s in receiver.spans() if s["traceId"] == TRACE
                         and s["kind"] == 3], "the continued trace's client span")
            assert continued[0]["parentSpanId"] == PARENT
            assert seen[1]["tracestate"] == "k=v"
            assert seen[1]["traceparent"].startswith(f"00-{TRACE}-")
    finally:
        await outbound.stop(1)
        await inbound.stop(1)


async def test_a_receiver_that_hangs_or_is_gone_does_not_hold_requests_up(
        receiver: Receiver, app: tuple[int, list[dict[str, str]]]) -> None:
    app_port, _ = app
    receiver.hold = asyncio.Event()  # accepts, never answers (until the test ends)
    inbound, outbound = await mesh(app_port, f"http://127.0.0.1:{receiver.port}")
    for sidecar in (inbound, outbound):
        assert sidecar.exporter is not None
        sidecar.exporter.max_queue = 4
        sidecar.exporter.batch_size = 2
        sidecar.exporter.timeout = 0.5  # the final flush at stop gives up soon
    try:
        url = f"http://127.0.0.1:{outbound.ports()['outbound:catalog']}/"
        async with aiohttp.ClientSession() as session:
            for _ in range(20):
                async with session.get(url) as response:
                    assert response.status == 200
        assert outbound.span_counters.dropped.children[()].value > 0
        receiver.hold.set()
        await receiver.runner.cleanup()  # type: ignore[union-attr]  # now it is gone
        async with aiohttp.ClientSession() as session:
            for _ in range(5):
                async with session.get(url) as response:
                    assert response.status == 200
        assert "meshlet_proxy_spans_dropped_total" in render(outbound.metrics.registry).decode()
    finally:
        await outbound.stop(1)
        await inbound.stop(1)

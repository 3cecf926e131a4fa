"""The sidecar's routing, sharding and resilience against real backends on loopback."""

from __future__ import annotations

import asyncio
import json
from collections import Counter
from collections.abc import AsyncIterator, Callable
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from prometheus_client import generate_latest

from meshlet.proxy.config import ClusterConfig, Endpoint, ListenerConfig, Snapshot
from meshlet.proxy.sidecar import Sidecar
from tests.conftest import async_wait_until


class Backend:
    """A backend whose behaviour the test sets: ok, a status code, or held at a gate."""

    def __init__(self, name: str, meta: dict[str, str] | None = None) -> None:
        self.name = name
        self.meta = meta or {}
        self.status = 200
        self.hits = 0
        self.gate: asyncio.Event | None = None
        self.held = 0
        self.runner: web.AppRunner | None = None
        self.port = 0

    async def handle(self, request: web.Request) -> web.Response:
        self.hits += 1
        if self.gate is not None:
            self.held += 1
            await self.gate.wait()
        return web.json_response({"backend": self.name, "headers": dict(request.headers),
                                  "path": request.path_qs,
                                  "raw_headers": [[k.decode(), v.decode()]
                                                  for k, v in request.raw_headers]},
                                 status=self.status)

    async def start(self) -> Backend:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self.handle)
        self.runner = web.AppRunner(app, access_log=None)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        await site.start()
        self.port = self.runner.addresses[0][1]
        return self

    def endpoint(self) -> Endpoint:
        return Endpoint(self.name, "127.0.0.1", self.port,
                        meta=tuple(sorted(self.meta.items())))


@pytest.fixture
async def make_backends() -> AsyncIterator[Callable[..., Any]]:
    started: list[Backend] = []

    async def make(*names: str, **meta: list[str]) -> list[Backend]:
        out = []
        for i, name in enumerate(names):
            b = await Backend(name, {k: v[i] for k, v in meta.items()}).start()
            started.append(b)
            out.append(b)
        return out
    yield make
    for b in started:
        if b.gate is not None:
            b.gate.set()
        assert b.runner is not None
        await b.runner.cleanup()


async def sidecar_for(backends: list[Backend], direction: str = "outbound",
                      **settings: Any) -> Sidecar:
    snapshot = Snapshot(1, "client", "client-0",
                        (ListenerConfig("svc", direction, "127.0.0.1", 0),),
                        {f"{direction}:svc": ClusterConfig(
                            "svc", tuple(b.endpoint() for b in backends), settings)})
    sidecar = Sidecar(snapshot)
    await sidecar.start()
    return sidecar


def base(sidecar: Sidecar) -> str:
    (port,) = sidecar.ports().values()
    return f"http://127.0.0.1:{port}"


def metrics(sidecar: Sidecar) -> str:
    return generate_latest(sidecar.metrics.registry).decode()


async def get(session: aiohttp.ClientSession, url: str, **kw: Any) -> tuple[int, Any, Any]:
    async with session.get(url, **kw) as resp:
        body = await resp.json() if resp.content_type == "application/json" \
            else await resp.text()
        return resp.status, body, resp.headers


async def test_canary_split_by_version(make_backends: Any) -> None:
    v1, v2 = await make_backends("v1", "v2", version=["v1", "v2"])
    sidecar = await sidecar_for([v1, v2], routes=[{"split": [
        {"subset": {"version": "v1"}, "weight": 90}, {"subset": {"version": "v2"},
                                                      "weight": 10}]}])
    try:
        async with aiohttp.ClientSession() as s:
            seen = Counter([(await get(s, base(sidecar)))[1]["backend"] for _ in range(1000)])
        assert abs(seen["v2"] - 100) < 40  # 10% of 1000, within 4 sigma
    finally:
        await sidecar.stop(1)


async def test_header_route_rewrite_and_no_route(make_backends: Any) -> None:
    v1, v2 = await make_backends("v1", "v2", version=["v1", "v2"])
    sidecar = await sidecar_for([v1, v2], routes=[
        {"match": {"path_prefix": "/api", "headers": {"x-beta": "1"}},
         "split": [{"subset": {"version": "v2"}}],
         "request_headers": {"set": {"x-routed": "beta"}, "remove": ["x-secret"]}},
        {"match": {"path_prefix": "/api"}, "split": [{"subset": {"version": "v1"}}]}])
    try:
        async with aiohttp.ClientSession() as s:
            status, body, _ = await get(s, base(sidecar) + "/api/x",
                                        headers={"x-beta": "1", "x-secret": "s"})
            assert status == 200 and body["backend"] == "v2"
            assert body["headers"]["x-routed"] == "beta" and "x-secret" not in body["headers"]
            assert (await get(s, base(sidecar) + "/api/x"))[1]["backend"] == "v1"
            status, text, headers = await get(s, base(sidecar) + "/elsewhere")
            assert status == 404 and headers["x-meshlet-error"] == "no_route"
            assert "no route of svc matches GET /elsewhere" in text
    finally:
        await sidecar.stop(1)


async def test_path_route_rewrites_heads_relayed_as_received(make_backends: Any) -> None:
    """A route on the path alone rewrites a plain head, relayed as received, as it
    rewrites a head rebuilt: its headers set once, the removed ones gone in any case."""
    (backend,) = await make_backends("v1")
    sidecar = await sidecar_for([backend], routes=[
        {"match": {"path_prefix": "/"},
         "request_headers": {"set": {"x-mesh": "bench"}, "remove": ["x-secret"]}}])
    try:
        async with aiohttp.ClientSession() as s:
            for sent in ({}, {"X-Secret": "s"}, {"X-MESH": "from-the-client"},
                         {"Connection": "keep-alive", "x-secret": "s"}):
                status, body, _ = await get(s, base(sidecar) + "/a/b?c=d", headers=sent)
                assert status == 200 and body["path"] == "/a/b?c=d"
                names = [name.lower() for name, _ in body["raw_headers"]]
                assert [v for k, v in body["raw_headers"] if k.lower() == "x-mesh"] == ["bench"]
                assert "x-secret" not in names and "connection" not in names
                assert names.count("host") == 1 and "user-agent" in names
        # A target urlsplit cannot read is routed on its path, not a dropped connection.
        (port,) = sidecar.ports().values()
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"GET //[a:// HTTP/1.1\r\nHost: a\r\n\r\n")
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
        writer.close()
        assert head.startswith(b"HTTP/1.1 200 ")
    finally:
        await sidecar.stop(1)


async def test_range_partitions_route_to_shards(make_backends: Any) -> None:
    backends = await make_backends("a-f", "g-p", "q-z", shard=["s1", "s2", "s3"])
    sidecar = await sidecar_for(backends, partition={
        "key": "header:x-tenant", "strategy": "range", "ranges": [
            {"from": "a", "to": "f", "shard": "s1"}, {"from": "g", "to": "p", "shard": "s2"},
            {"from": "q", "to": "z", "shard": "s3"}]})
    try:
        async with aiohttp.ClientSession() as s:
            for tenant, expected in [("acme", "a-f"), ("globex", "g-p"), ("umbrella", "q-z"),
                                     ("f", "a-f"), ("g", "g-p")]:
                status, body, _ = await get(s, base(sidecar), headers={"x-tenant": tenant})
                assert (status, body["backend"]) == (200, expected)
            status, text, headers = await get(s, base(sidecar))
            assert status == 400 and headers["x-meshlet-error"] == "partition_key_missing"
            assert "range partition of svc on header:x-tenant" in text
            status, _, headers = await get(s, base(sidecar), headers={"x-tenant": "42"})
            assert status == 400 and headers["x-meshlet-error"] == "partition_no_match"
    finally:
        await sidecar.stop(1)


async def test_ring_hash_keeps_a_user_on_one_backend(make_backends: Any) -> None:
    backends = await make_backends("b0", "b1", "b2")
    sidecar = await sidecar_for(backends, lb="ring_hash", hash_on="header:x-user")
    try:
        async with aiohttp.ClientSession() as s:
            homes = {}
            for user in range(30):
                seen = {(await get(s, base(sidecar), headers={"x-user": f"u{user}"}))[1][
                    "backend"] for _ in range(3)}
                assert len(seen) == 1
                homes[user] = seen.pop()
            assert len(set(homes.values())) == 3
    finally:
        await sidecar.stop(1)


async def test_retry_on_status_goes_to_another_endpoint(make_backends: Any) -> None:
    bad, good = await make_backends("bad", "good")
    bad.status = 503
    sidecar = await sidecar_for([bad, good], retry_on=[503], retry_backoff="1ms")
    try:
        async with aiohttp.ClientSession() as s:
            results = [await get(s, base(sidecar)) for _ in range(20)]
        assert all(r[0] == 200 and r[1]["backend"] == "good" for r in results)
        assert 'reason="status_503"' in metrics(sidecar)
    finally:
        await sidecar.stop(1)


async def test_retry_budget_caps_retries_when_every_replica_fails(make_backends: Any) -> None:
    backends = await make_backends("b0", "b1", "b2")
    for b in backends:
        b.status = 503
    sidecar = await sidecar_for(backends, retry_on=[503], retries=2, retry_backoff="0s",
                                retry_budget_percent=20, retry_budget_min_per_second=0.5,
                                outlier_consecutive_failures=0)
    try:
        async with aiohttp.ClientSession() as s:
            statuses = Counter([(await get(s, base(sidecar)))[0] for _ in range(200)])
        assert statuses == {503: 200}  # the upstream's own answer is passed on
        attempts = sum(b.hits for b in backends)
        # Without a budget: 600 attempts. With it: 200 + 20% of 200 + 0.5/s * 10 s.
        assert attempts <= 200 + 40 + 5
        assert "meshlet_proxy_retry_budget_exhausted_total" in metrics(sidecar)
    finally:
        await sidecar.stop(1)


async def test_breaker_overflow_answers_503_while_others_wait(make_backends: Any) -> None:
    (slow,) = await make_backends("slow")
    slow.gate = asyncio.Event()
    sidecar = await sidecar_for([slow], max_requests=2)
    try:
        async with aiohttp.ClientSession() as s:
            held = [asyncio.ensure_future(get(s, base(sidecar))) for _ in range(2)]
            await async_wait_until(lambda: asyncio.sleep(0, slow.held == 2),
                                   message="two requests held at the backend")
            status, _text, headers = await get(s, base(sidecar))
            # Answered while the two admitted requests are still held: no queueing.
            assert status == 503 and headers["x-meshlet-error"] == "breaker_open"
            assert not any(h.done() for h in held)
            slow.gate.set()
            assert [(await h)[0] for h in held] == [200, 200]
        assert 'limit="max_requests"' in metrics(sidecar)
    finally:
        await sidecar.stop(1)


async def test_pending_requests_wait_for_a_connection_and_overflow(make_backends: Any) -> None:
    (slow,) = await make_backends("slow")
    slow.gate = asyncio.Event()
    sidecar = await sidecar_for([slow], max_connections=1, max_pending_requests=1)
    try:
        async with aiohttp.ClientSession() as s:
            first = asyncio.ensure_future(get(s, base(sidecar)))
            await async_wait_until(lambda: asyncio.sleep(0, slow.held == 1))
            second = asyncio.ensure_future(get(s, base(sidecar)))  # pending
            cluster = next(iter(sidecar.clusters.values()))
            await async_wait_until(lambda: asyncio.sleep(0, len(cluster.pool.pending) == 1))
            status, _, headers = await get(s, base(sidecar))
            assert status == 503 and headers["x-meshlet-error"] == "breaker_open"
            slow.gate.set()
            assert (await first)[0] == 200 and (await second)[0] == 200
        assert 'limit="max_pending_requests"' in metrics(sidecar)
    finally:
        await sidecar.stop(1)


async def test_outlier_detection_ejects_a_failing_endpoint(make_backends: Any) -> None:
    bad, good = await make_backends("bad", "good")
    bad.status = 500
    sidecar = await sidecar_for([bad, good], outlier_consecutive_failures=3)
    try:
        async with aiohttp.ClientSession() as s:
            for _ in range(6):
                await get(s, base(sidecar))
            assert bad.hits == 3
            results = [await get(s, base(sidecar)) for _ in range(20)]
        assert all(r[1]["backend"] == "good" for r in results)
        assert bad.hits == 3
        text = metrics(sidecar)
        assert 'meshlet_proxy_outlier_ejections_total{destination="svc",direction="outbound"} 1.0' \
            in text
        assert 'meshlet_proxy_endpoint_requests_total{code="5xx",destination="svc",' \
               'direction="outbound",endpoint="bad"} 3.0' in text
    finally:
        await sidecar.stop(1)


async def test_per_try_timeout_retries_elsewhere(make_backends: Any) -> None:
    stuck, fine = await make_backends("stuck", "fine")
    stuck.gate = asyncio.Event()
    sidecar = await sidecar_for([stuck, fine], per_try_timeout="200ms", lb="round_robin",
                                retry_backoff="0s")
    try:
        async with aiohttp.ClientSession() as s:
            status, body, _ = await get(s, base(sidecar))
        assert status == 200 and body["backend"] == "fine" and stuck.held == 1
        assert 'reason="per_try_timeout"' in metrics(sidecar)
    finally:
        await sidecar.stop(1)


async def test_inbound_rate_limit_gives_429(make_backends: Any) -> None:
    (app,) = await make_backends("app")
    sidecar = await sidecar_for([app], direction="inbound", rate_limit_rps=0.001,
                                rate_limit_burst=3)
    try:
        async with aiohttp.ClientSession() as s:
            statuses = [(await get(s, base(sidecar)))[0] for _ in range(5)]
            _, _text, headers = await get(s, base(sidecar))
        assert statuses == [200, 200, 200, 429, 429]
        assert headers["x-meshlet-error"] == "rate_limited" and app.hits == 3
        assert 'reason="rate_limited"' in metrics(sidecar)
    finally:
        await sidecar.stop(1)


async def test_access_log_names_the_reason(make_backends: Any,
                                           caplog: pytest.LogCaptureFixture) -> None:
    (app,) = await make_backends("app")
    sidecar = await sidecar_for([app], routes=[{"match": {"path_prefix": "/api"}}])
    try:
        with caplog.at_level("INFO", logger="meshlet.access"):
            async with aiohttp.ClientSession() as s:
                assert (await get(s, base(sidecar) + "/api/ok"))[0] == 200
                assert (await get(s, base(sidecar) + "/nope"))[0] == 404
        lines = [r.getMessage() for r in caplog.records if r.name == "meshlet.access"]
        assert len(lines) == 1  # access_log=errors: only the refused request
        entry = json.loads(lines[0])
        assert (entry["method"], entry["path"], entry["status"], entry["reason"]) == (
            "GET", "/nope", 404, "no_route")
    finally:
        await sidecar.stop(1)

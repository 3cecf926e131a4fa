"""The agent's pod meter against a real HTTP server serving a sidecar's metrics text:
the first look gives nothing, the next the request rate since; a restarted app starts
over; an unreadable sidecar gives nothing."""

from __future__ import annotations

import itertools
from collections.abc import AsyncIterator
from dataclasses import dataclass

import aiohttp
import pytest
from aiohttp import web

from meshlet.agent.pod_meter import PodMeter

SERIES = """# TYPE meshlet_proxy_requests_total counter
meshlet_proxy_requests_total{{code="200",destination="web",destination_instance="web-0",\
direction="inbound",reason="",response_class="2xx",source="shop"}} {n}
# TYPE meshlet_proxy_request_duration_seconds histogram
meshlet_proxy_request_duration_seconds_bucket{{destination="web",direction="inbound",le="0.05",\
source="shop"}} {n}
meshlet_proxy_request_duration_seconds_bucket{{destination="web",direction="inbound",le="+Inf",\
source="shop"}} {n}
meshlet_proxy_request_duration_seconds_sum{{destination="web",direction="inbound",\
source="shop"}} {s}
meshlet_proxy_request_duration_seconds_count{{destination="web",direction="inbound",\
source="shop"}} {n}
"""


@dataclass
class App:
    pid: int


@pytest.fixture
async def sidecar() -> AsyncIterator[str]:
    served = itertools.count(0, 1000)   # 1000 more requests at each scrape

    async def metrics(request: web.Request) -> web.Response:
        n = next(served)
        return web.Response(text=SERIES.format(n=n, s=n * 0.01))

    app = web.Application()
    app.router.add_get("/metrics", metrics)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    yield f"http://127.0.0.1:{port}"
    await runner.cleanup()


async def test_the_second_look_gives_the_rate_and_a_restart_starts_over(sidecar: str) -> None:
    meter = PodMeter()
    async with aiohttp.ClientSession() as http:
        assert await meter.measure(http, "web-1", sidecar, App(10), None) is None
        got = await meter.measure(http, "web-1", sidecar, App(10), None)
        assert got is not None
        assert got["requests_per_second"] is not None and got["requests_per_second"] > 0
        assert got["p95_latency_seconds"] is not None and got["p95_latency_seconds"] <= 0.05
        assert got["cpu"] is None                   # not a container: not measured
        assert await meter.measure(http, "web-1", sidecar, App(11), None) is None
        assert await meter.measure(http, "web-1", "http://127.0.0.1:9", App(11),
                                   None) is None
        assert await meter.measure(http, "web-1", "", App(11), None) is None
        meter.forget("web-1")
        assert meter.last == {}

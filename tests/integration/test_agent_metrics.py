"""The agent's metrics listener: GET /metrics and nothing else, bounded; its address
registered with the node, where discovery finds it."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
from prometheus_client.parser import text_string_to_metric_families

from meshlet.agent.agent import Agent
from meshlet.agent.metrics_listener import MAX_CONNECTIONS, MetricsListener
from meshlet.observe.agent_metrics import AgentMetrics
from meshlet.server.main import Server


@pytest.fixture
async def listener() -> AsyncIterator[tuple[MetricsListener, AgentMetrics]]:
    metrics = AgentMetrics(lambda: ["passing", "passing", "critical", "unknown"])
    served = MetricsListener(metrics.registry)
    await served.start("127.0.0.1", 0)
    yield served, metrics
    await served.stop()


async def raw(port: int, request: bytes) -> bytes:
    """What the listener answers ``request`` with, up to its closing the connection."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(request)
    await writer.drain()
    try:
        return await asyncio.wait_for(reader.read(1 << 20), 10)
    finally:
        writer.close()


async def test_get_metrics_is_prometheus_text_with_every_family(
        listener: tuple[MetricsListener, AgentMetrics]) -> None:
    served, metrics = listener
    metrics.workload("web")
    metrics.restarted("web")
    metrics.checked("web", ok=False)
    metrics.report_failed("node")
    metrics.scraped(ok=True)
    async with aiohttp.ClientSession() as http, \
            http.get(f"http://127.0.0.1:{served.address}/metrics") as resp:
        assert resp.status == 200
        assert resp.headers["Content-Type"].startswith("text/plain; version=0.0.4")
        text = await resp.text()
    samples = {(s.name, tuple(sorted(s.labels.items()))): s.value
               for family in text_string_to_metric_families(text) for s in family.samples}
    assert samples[("meshlet_agent_workloads", (("state", "passing"),))] == 2
    assert samples[("meshlet_agent_workloads", (("state", "critical"),))] == 1
    assert samples[("meshlet_agent_workloads", (("state", "warning"),))] == 0
    assert samples[("meshlet_agent_workload_restarts_total", (("service", "web"),))] == 1
    assert samples[("meshlet_agent_health_checks_total",
                    (("result", "failed"), ("service", "web")))] == 1
    assert samples[("meshlet_agent_health_checks_total",
                    (("result", "passed"), ("service", "web")))] == 0
    assert samples[("meshlet_agent_report_failures_total", (("report", "node"),))] == 1
    assert samples[("meshlet_agent_report_failures_total", (("report", "pod"),))] == 0
    assert samples[("meshlet_agent_pod_meter_scrapes_total", (("result", "ok"),))] == 1
    assert samples[("meshlet_agent_node_registered", ())] == 0


@pytest.mark.parametrize(("method", "path", "status"), [
    ("GET", "/", 404), ("GET", "/metrics/", 404), ("GET", "/v1/status", 404),
    ("POST", "/metrics", 405), ("PUT", "/metrics", 405), ("DELETE", "/metrics", 405),
    ("HEAD", "/metrics", 405), ("POST", "/config", 404),
])
async def test_only_get_metrics_is_served(listener: tuple[MetricsListener, AgentMetrics],
                                          method: str, path: str, status: int) -> None:
    served, _ = listener
    async with aiohttp.ClientSession() as http, \
            http.request(method, f"http://127.0.0.1:{served.address}{path}") as resp:
        assert resp.status == status
        if status == 405:
            assert resp.headers["Allow"] == "GET"


async def test_what_one_client_can_make_it_hold_is_bounded(
        listener: tuple[MetricsListener, AgentMetrics]) -> None:
    served, _ = listener
    long_head = b"GET /metrics HTTP/1.1\r\nHost: x\r\nX-Pad: " + b"a" * 32 * 1024 + b"\r\n\r\n"
    assert (await raw(served.address, long_head)).startswith(b"HTTP/1.1 431 ")
    long_url = b"GET /" + b"m" * 4096 + b" HTTP/1.1\r\nHost: x\r\n\r\n"
    assert (await raw(served.address, long_url)).startswith(b"HTTP/1.1 414 ")
    body = b"GET /metrics HTTP/1.1\r\nHost: x\r\nContent-Length: 4096\r\n\r\n"
    assert (await raw(served.address, body)).startswith(b"HTTP/1.1 413 ")


async def test_past_max_connections_a_new_one_is_closed_as_it_arrives(
        listener: tuple[MetricsListener, AgentMetrics]) -> None:
    served, _ = listener
    held = [socket.create_connection(("127.0.0.1", served.address))
            for _ in range(MAX_CONNECTIONS)]
    try:
        async def all_held() -> None:
            while len(served.connections) < MAX_CONNECTIONS:
                await asyncio.sleep(0.01)
        await asyncio.wait_for(all_held(), 10)
        assert await raw(served.address, b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n") == b""
    finally:
        for sock in held:
            sock.close()


def test_a_wildcard_listener_registers_the_nodes_address() -> None:
    listener = MetricsListener(AgentMetrics().registry)
    listener.host, listener.address = "0.0.0.0", 9100
    assert listener.address_to_register("192.0.2.7") == "192.0.2.7:9100"
    listener.host = "127.0.0.1"
    assert listener.address_to_register("192.0.2.7") == "127.0.0.1:9100"


async def test_a_taken_port_is_one_error_naming_it(
        listener: tuple[MetricsListener, AgentMetrics]) -> None:
    served, _ = listener
    other = MetricsListener(AgentMetrics().registry)
    with pytest.raises(OSError, match=rf"cannot serve metrics on 127\.0\.0\.1:{served.address}"):
        await other.start("127.0.0.1", served.address)


async def test_the_agent_registers_its_metrics_address_with_its_node(tmp_path: Path) -> None:
    server = await Server.start(tmp_path / "server", "127.0.0.1", 0)
    try:
        from tests.conftest import async_management_token
        token = await async_management_token(tmp_path / "server")
        agent = Agent(server.url, tmp_path / "agent", "n1", advertise="127.0.0.1",
                      token=token)
        try:
            address = await agent.serve_metrics("127.0.0.1", 0)
            await agent.host_watches.register()
            nodes, _ = await agent.client.nodes()
            assert [(n["name"], n["metrics"]) for n in nodes] == [("n1", address)]
            async with aiohttp.ClientSession() as http, \
                    http.get(f"http://{address}/metrics") as resp:
                assert resp.status == 200
                assert "meshlet_agent_workloads" in await resp.text()
        finally:
            await agent.stop()
        assert agent.metrics_listener is None
    finally:
        await server.stop()

"""The server's HTTP API on a real loopback socket: answers, bad input, blocking queries."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest

from meshlet.api.client import Client
from meshlet.errors import Conflict, NotFound, Unavailable
from meshlet.server.main import Server
from tests.conftest import async_wait_until

REG = {"service": "web", "id": "web-1", "address": "127.0.0.1", "port": 8080}


async def test_register_health_and_listing(server: Server) -> None:
    async with Client(server.url, token=server.acl.token()) as c:
        inst = await c.register(**REG, tags=["v1"], meta={"version": "1"})
        assert inst["status"] == "critical"
        await c.register(**{**REG, "id": "web-2", "port": 8081})
        await c.set_health("web-1", "passing", "ok")
        assert [s["name"] for s in await c.services()] == ["web"]
        passing, index = await c.instances("web", passing=True)
        assert [i["id"] for i in passing] == ["web-1"] and index > 0
        everything, _ = await c.instances("web")
        assert [i["id"] for i in everything] == ["web-1", "web-2"]
        await c.deregister("web-2")
        assert len((await c.instances("web"))[0]) == 1
        status = await c.status()
        assert status["instances"] == 1 and [m["id"] for m in status["members"]] == ["server-1"]


async def test_kv_and_cas_through_client(server: Server) -> None:
    async with Client(server.url, token=server.acl.token()) as c:
        first = await c.kv_put("app/colour", b"blue", cas=0)
        assert await c.kv_get_raw("app/colour") == b"blue"
        with pytest.raises(Conflict):
            await c.kv_put("app/colour", b"red", cas=0)
        await c.kv_put("app/colour", b"red", cas=first["modify_index"])
        assert [e["key"] for e in await c.kv_list("app/")] == ["app/colour"]
        assert await c.kv_delete("app/colour") is True
        with pytest.raises(NotFound):
            await c.kv_get("app/colour")


async def test_config_entries(server: Server) -> None:
    async with Client(server.url, token=server.acl.token()) as c:
        body = await c.config_set("web", {"retries": "3", "request_timeout": "2s"})
        assert body["settings"] == {"retries": 3, "request_timeout": 2.0}
        assert body["effective"]["lb"] == "round_robin"
        got, _ = await c.config_get("web")
        assert got["effective"]["retries"] == 3


def contents(server: Server) -> Any:
    """The state without its index (a refused command may still take a log index)."""
    state = json.loads(server.node.machine.snapshot())
    del state["index"]
    return state


@pytest.mark.parametrize("method, path, body, status, code, field", [
    ("PUT", "/v1/catalog/register", b"{not json", 400, "invalid", "body"),
    ("PUT", "/v1/catalog/register", {"id": "x", "port": 80}, 400, "invalid", "service"),
    ("PUT", "/v1/catalog/register", {**REG, "port": "80"}, 400, "invalid", "port"),
    ("PUT", "/v1/catalog/register", {**REG, "port": 99999}, 400, "invalid", "port"),
    ("PUT", "/v1/catalog/register", {**REG, "service": "Web!"}, 400, "invalid", "service"),
    ("PUT", "/v1/catalog/register", {**REG, "extra": 1}, 400, "invalid", "extra"),
    ("PUT", "/v1/catalog/register", [1, 2], 400, "invalid", None),
    ("PUT", "/v1/health/ghost", {"status": "passing"}, 404, "not_found", "id"),
    ("PUT", "/v1/health/web-1", {"status": "fine"}, 400, "invalid", "status"),
    ("PUT", "/v1/catalog/deregister/ghost", None, 404, "not_found", "id"),
    ("GET", "/v1/services/nothing/instances", None, 404, "not_found", "service"),
    ("GET", "/v1/kv/missing", None, 404, "not_found", "key"),
    ("PUT", "/v1/kv/k?cas=abc", b"v", 400, "invalid", "cas"),
    ("PUT", "/v1/kv/k?cas=5", b"v", 409, "conflict", "cas"),
    ("GET", "/v1/services?index=1&wait=forever", None, 400, "invalid", "wait"),
    ("PUT", "/v1/config/web", {"lb": "fastest"}, 400, "invalid", "lb"),
    ("PUT", "/v1/config/web", "string", 400, "invalid", "body"),
    ("DELETE", "/v1/config/nothing", None, 404, "not_found", "service"),
    ("GET", "/v1/nowhere", None, 404, "not_found", None),
    ("POST", "/v1/services", None, 405, "method_not_allowed", None),
])
async def test_bad_input_gets_4xx_and_changes_nothing(
        server: Server, http: Any, method: str, path: str, body: Any, status: int,
        code: str, field: str | None) -> None:
    async with Client(server.url, token=server.acl.token()) as c:
        await c.register(**REG)
    before = contents(server)
    kwargs = {"data": body} if isinstance(body, bytes) else {"json": body}
    async with http.request(method, path, **kwargs) as resp:
        assert resp.status == status
        payload = await resp.json()
    assert payload["error"]["code"] == code
    assert payload["error"]["field"] == field
    assert payload["error"]["message"]
    assert contents(server) == before


async def test_blocking_query_wakes_on_change(server: Server) -> None:
    async with Client(server.url, token=server.acl.token()) as c:
        await c.register(**REG)
        _, index = await c.instances("web")
        loop = asyncio.get_running_loop()
        watch = loop.create_task(c.instances("web", index=index, wait=20))
        other_kv_change = await c.kv_put("unrelated", b"x")
        assert other_kv_change
        await c.set_health("web-1", "passing")
        found, new_index = await asyncio.wait_for(watch, 10)
        assert new_index > index and found[0]["status"] == "passing"


async def test_blocking_query_times_out_with_same_index(server: Server) -> None:
    async with Client(server.url, token=server.acl.token()) as c:
        await c.register(**REG)
        _, index = await c.instances("web")
        found, same = await c.instances("web", index=index, wait=0.2)
        assert same == index and len(found) == 1


@pytest.mark.parametrize("raw", ["\u0661\u0662", " 12", "1_0", "+3", "-1", "9" * 5000, "0x10"])
async def test_a_blocking_index_is_ascii_digits_only(server: Server, http: Any,
                                                     raw: str) -> None:
    async with http.get("/v1/kv", params={"index": raw, "wait": "0s"}) as resp:
        body = await resp.json()
    assert resp.status == 400, body
    assert "index" in json.dumps(body) and "non-negative integer" in json.dumps(body)


async def test_unreachable_server_is_a_clear_error() -> None:
    async with Client("http://127.0.0.1:1") as c:
        with pytest.raises(Unavailable, match="cannot reach meshlet"):
            await c.status()


async def test_server_metrics(server: Server, http: Any) -> None:
    async with Client(server.url, token=server.acl.token()) as c:
        await c.kv_put("m", b"1")
    async with http.get("/metrics") as resp:
        text = await resp.text()
    assert "meshlet_commit_latency_seconds_count 1.0" in text
    assert f"meshlet_state_index {float(server.node.machine.index)}" in text


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    from prometheus_client.parser import text_string_to_metric_families
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


async def test_watchers_and_apply_time_are_measured(server: Server, http: Any) -> None:
    async with Client(server.url, token=server.acl.token()) as c:
        _, index = await c.services_after(None)
        waiting = asyncio.ensure_future(c.services_after(index, wait=30))

        async def scrape() -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
            async with http.get("/metrics") as resp:
                return samples(await resp.text())
        async def watching() -> bool:
            return (await scrape())[("meshlet_api_blocking_queries", ())] == 1
        await async_wait_until(watching, 10, "the watch to be waiting")
        applied = (await scrape())[("meshlet_raft_apply_duration_seconds_count", ())]
        await c.register(id="web-1", service="web", address="127.0.0.1", port=80)
        _, moved = await asyncio.wait_for(waiting, 30)
        assert moved > index
        await c.services_after(moved, wait=0.05)  # a wait that runs out
    after = await scrape()
    assert after[("meshlet_api_blocking_queries", ())] == 0
    assert after[("meshlet_api_blocking_query_returns_total", (("reason", "changed"),))] == 1
    assert after[("meshlet_api_blocking_query_returns_total", (("reason", "timeout"),))] == 1
    assert after[("meshlet_raft_apply_duration_seconds_count", ())] == applied + 1


async def test_networks_and_addresses(server: Server, http: Any) -> None:
    async with Client(server.url, token=server.acl.token()) as c:
        net = await c.network_create("front", subnet="10.60.0.0/24")
        assert (net["subnet"], net["gateway"]) == ("10.60.0.0/24", "10.60.0.1")
        await c.network_create("hostnet", driver="host")
        assert [n["name"] for n in await c.networks()] == ["front", "hostnet"]
        got = await c.address_assign("front", "web-1")
        assert got == {"network": "front", "owner": "web-1", "address": "10.60.0.2",
                       "prefix": 24, "gateway": "10.60.0.1"}
        assert (await c.address_assign("front", "web-1"))["address"] == "10.60.0.2"
        assert (await c.network("front"))["addresses"] == {"web-1": "10.60.0.2"}
        with pytest.raises(Conflict, match="in use by web-1"):
            await c.network_delete("front")
        with pytest.raises(Conflict, match="overlaps"):
            await c.network_create("other", subnet="10.60.0.128/25")
        assert await c.address_release("front", "web-1") is True
        await c.network_delete("front")
        with pytest.raises(NotFound):
            await c.network("front")
    async with http.post("/v1/networks", json={"name": "x", "subnet": "nope"}) as resp:
        assert resp.status == 400
        assert (await resp.json())["error"]["field"] == "subnet"
    async with http.post("/v1/networks", json={"name": "x", "colour": "red"}) as resp:
        assert resp.status == 400
        assert (await resp.json())["error"]["field"] == "colour"

"""`keep_current` against a real server: the file follows the catalog and the nodes
through blocking queries, is rewritten only on a change, survives the server going
away, and stops on its event."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

from meshlet.api.client import Client
from meshlet.errors import Unauthenticated, Unavailable
from meshlet.observe.file_sd_writer import keep_current
from meshlet.server.main import Server
from tests.conftest import async_wait_until


def jobs(path: Path) -> list[tuple[str, str]]:
    if not path.exists():
        return []
    return [(g["labels"]["job"], g["targets"][0]) for g in json.loads(path.read_text())]


async def test_the_file_follows_the_mesh_until_stopped(server: Server, tmp_path: Path) -> None:
    path = tmp_path / "targets.json"
    writes: list[int] = []
    stop = asyncio.Event()
    async with Client(server.url, token=server.acl.token()) as client:
        host = server.url.removeprefix("http://")
        task = asyncio.ensure_future(keep_current(client, path, stop, wait=30,
                                                  wrote=writes.append))

        async def listed(*expected: tuple[str, str]) -> bool:
            return jobs(path) == list(expected)
        await async_wait_until(lambda: listed(("meshlet-server", host)), 10, "the server")
        await client.node_register("n1", "127.0.0.1", metrics="127.0.0.1:9100")
        await async_wait_until(lambda: listed(("meshlet-server", host),
                                              ("meshlet-agent", "127.0.0.1:9100")),
                               10, "the agent, through the nodes' blocking query")
        await client.register(id="web-0", service="web", address="127.0.0.1", port=1,
                              node="n1", meta={"metrics": "http://127.0.0.1:9200"})
        await client.register(id="db-0", service="db", address="127.0.0.1", port=2,
                              meta={})  # no sidecar: not a target
        await async_wait_until(lambda: listed(("meshlet-server", host),
                                              ("meshlet-agent", "127.0.0.1:9100"),
                                              ("meshlet-sidecar", "127.0.0.1:9200")),
                               10, "the sidecar, through the catalog's blocking query")
        group = json.loads(path.read_text())[2]
        assert group["labels"] == {"job": "meshlet-sidecar", "meshlet_node": "n1",
                                   "meshlet_service": "web", "meshlet_instance": "web-0"}
        written = len(writes)
        # A change that changes no target (health) moves the catalog: no new write.
        await client.set_health("web-0", "critical", "down")
        await client.set_health("web-0", "passing", "up")
        await client.deregister("db-0")
        await client.register(id="web-1", service="web", address="127.0.0.1", port=3,
                              node="n1", meta={"metrics": "http://127.0.0.1:9201"})
        await async_wait_until(lambda: listed(("meshlet-server", host),
                                              ("meshlet-agent", "127.0.0.1:9100"),
                                              ("meshlet-sidecar", "127.0.0.1:9200"),
                                              ("meshlet-sidecar", "127.0.0.1:9201")),
                               10, "the second sidecar")
        assert len(writes) == written + 1, writes
        stop.set()
        await asyncio.wait_for(task, 10)
    assert writes[-1] == 4
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".targets.json.")]


async def test_once_writes_and_returns(server: Server, tmp_path: Path) -> None:
    path = tmp_path / "targets.json"
    async with Client(server.url, token=server.acl.token()) as client:
        await asyncio.wait_for(keep_current(client, path, asyncio.Event(), once=True), 10)
    assert [job for job, _ in jobs(path)] == ["meshlet-server"]


async def test_a_bad_token_ends_it_and_an_absent_server_is_waited_for(
        server: Server, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "targets.json"
    async with Client(server.url, token="not-a-token") as client:
        with pytest.raises(Unauthenticated):
            await asyncio.wait_for(keep_current(client, path, asyncio.Event()), 10)
    async with Client("http://127.0.0.1:1") as client:
        with pytest.raises(Unavailable):
            await keep_current(client, path, asyncio.Event(), once=True)
        stop = asyncio.Event()
        task = asyncio.ensure_future(keep_current(client, path, stop))

        async def retrying() -> bool:
            return sum("retrying in" in r.getMessage() for r in caplog.records) >= 2
        await async_wait_until(retrying, 10, "it to say twice that it retries")
        assert not task.done()  # still retrying, not ended
        stop.set()
        await asyncio.wait_for(task, 10)
    assert not path.exists()

"""Intentions on a real server: create, list (highest precedence first, with the
default policy), check, delete; a blocking list wakes on a change; a token without
`service` write on the destination changes nothing; bad bodies name the field; the
default policy is recorded at founding and survives a restart."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from meshlet.api.client import Client
from meshlet.errors import ConfigError, Forbidden, NotFound
from meshlet.server.main import Server, ServerOptions
from tests.conftest import async_management_token


async def test_create_list_check_and_delete(server: Server) -> None:
    async with Client(server.url, token=server.acl.token()) as admin:
        body, index = await admin.intentions()
        assert body == {"default_policy": "allow", "intentions": []}
        waiting = asyncio.create_task(admin.intentions(index, wait=30))
        await admin.intention_set({"source": "*", "destination": "db", "action": "deny"})
        woke, later = await asyncio.wait_for(waiting, 10)
        assert later > index and woke["intentions"][0]["destination"] == "db"
        await admin.intention_set({"source": "web", "destination": "db", "action": "allow",
                                   "description": "the shop reads"})
        await admin.intention_set({"source": "web", "destination": "api", "permissions": [
            {"action": "allow", "http": {"path_prefix": "/v1/", "methods": ["GET"]}}]})
        listed = (await admin.intentions())[0]["intentions"]
        assert [(i["source"], i["destination"], i["precedence"]) for i in listed] == [
            ("web", "api", 4), ("web", "db", 4), ("*", "db", 3)]
        assert (await admin.intention_check("web", "db"))["allowed"]
        refused = await admin.intention_check("other", "db")
        assert refused == {"allowed": False, "why": "* => db deny"}
        assert (await admin.intention_check("web", "api", "GET", "/v1/x"))["allowed"]
        post = await admin.intention_check("web", "api", "POST", "/v1/x")
        assert post["allowed"] and "no permission matched, default allow" in post["why"]
        await admin.intention_set({"source": "web", "destination": "db", "action": "deny"})
        assert not (await admin.intention_check("web", "db"))["allowed"]  # replaced
        await admin.intention_delete("web", "db")
        with pytest.raises(NotFound):
            await admin.intention_delete("web", "db")
        assert len((await admin.intentions())[0]["intentions"]) == 2


async def test_rights_are_on_the_destination_and_bad_bodies_change_nothing(
        server: Server) -> None:
    async with Client(server.url, token=server.acl.token()) as admin:
        await admin.policy_create("web-owner", [
            {"kind": "service", "prefix": "web", "access": "write"}])
        owner = (await admin.token_create(["web-owner"]))["secret"]
        await admin.intention_set({"source": "api", "destination": "db", "action": "allow"})
    index = server.node.machine.index
    async with Client(server.url, token=owner) as client:
        await client.intention_set({"source": "api", "destination": "web", "action": "deny"})
        for body in ({"source": "web", "destination": "db", "action": "allow"},
                     {"source": "web", "destination": "*", "action": "allow"}):
            with pytest.raises(Forbidden):
                await client.intention_set(body)
        with pytest.raises(Forbidden):
            await client.intention_delete("api", "db")
        shown = (await client.intentions())[0]["intentions"]
        assert [i["destination"] for i in shown] == ["web"]  # db's is not its to read
        for body, field in (({"source": "web", "destination": "web"}, "action"),
                            ({"source": "Web!", "destination": "web", "action": "allow"},
                             "source"),
                            ({"source": "a", "destination": "web", "action": "allow",
                              "x": 1}, "intention.x")):
            with pytest.raises(ConfigError) as bad:
                await client.intention_set(body)
            assert bad.value.field == field
    assert server.node.machine.index == index + 1  # only the one it may write


async def test_the_default_policy_is_recorded_at_founding(tmp_path: Path) -> None:
    srv = await Server.start(tmp_path, "127.0.0.1", 0, ServerOptions(default_intention="deny"))
    token = await async_management_token(tmp_path)
    try:
        async with Client(srv.url, token=token) as admin:
            for _ in range(200):  # the founding leader records it as it starts leading
                if srv.node.machine.intentions.recorded:
                    break
                await asyncio.sleep(0.02)
            assert (await admin.intentions())[0]["default_policy"] == "deny"
            assert not (await admin.intention_check("web", "db"))["allowed"]
    finally:
        await srv.stop()
    again = await Server.start(tmp_path, "127.0.0.1", 0,
                               ServerOptions(default_intention="allow"))
    try:
        assert again.node.machine.intentions.default_policy == "deny"  # recorded wins
    finally:
        await again.stop()

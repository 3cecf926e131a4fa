"""Access control on a real server: every /v1 route refuses a request without a token
(401) and one whose token lacks the right (403), and neither changes anything; the
join token opens the Raft founding and joining routes only; tokens and policies
survive a restart; the management token's file is private."""

from __future__ import annotations

import os
import re
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest

from meshlet.api.client import Client
from meshlet.errors import ConfigError, Conflict, Forbidden, Unauthenticated
from meshlet.server.main import Server, ServerOptions
from tests.conftest import async_management_token

JOIN = "join-token-for-these-tests-0123456789"


@pytest.fixture
async def server(tmp_path: Path) -> AsyncIterator[Server]:
    srv = await Server.start(tmp_path, "127.0.0.1", 0, ServerOptions(join_token=JOIN))
    await async_management_token(tmp_path)
    yield srv
    await srv.stop()


def v1_routes(server: Server) -> list[tuple[str, str]]:
    """(method, path) of every /v1 route the app serves, placeholders filled in."""
    found = set()
    for route in server.runner.app.router.routes():
        canonical = route.resource.canonical if route.resource else ""
        if canonical.startswith("/v1/") and route.method != "HEAD":
            found.add((route.method, re.sub(r"\{[^}]+\}", "x", canonical)))
    return sorted(found)


async def call(server: Server, method: str, path: str, headers: dict[str, str]
               ) -> tuple[int, dict]:  # type: ignore[type-arg]
    async with aiohttp.ClientSession() as s, s.request(
            method, server.url + path, headers=headers, json={}) as resp:
        return resp.status, await resp.json(content_type=None)


async def test_every_route_has_a_rule(server: Server) -> None:
    routes = server.runner.app.router.routes()
    missing = [(r.method, r.resource.canonical) for r in routes
               if r.resource is not None and r.resource.canonical.startswith("/v1/")
               and r.method != "HEAD"
               and (r.method, r.resource.canonical) not in server.api.guard.needs]
    assert missing == []
    assert len(v1_routes(server)) >= 40


async def test_every_route_refuses_no_token_and_an_unknown_one(server: Server) -> None:
    index = server.node.machine.index
    for method, path in v1_routes(server):
        for headers in ({}, {"X-Meshlet-Token": "not-a-token"},
                        {"Authorization": "Bearer not-a-token"},
                        {"Authorization": "Basic dXNlcjpwYXNz"}):
            status, body = await call(server, method, path, headers)
            assert status == 401, (method, path, headers, body)
            assert body["error"]["code"] == "unauthenticated"
            assert set(body["error"]) == {"code", "message", "field"}
    assert server.node.machine.index == index  # nothing was proposed
    async with aiohttp.ClientSession() as s, s.get(server.url + "/metrics") as resp:
        metrics = await resp.text()  # open without a token, and counts the refusals
    assert f'meshlet_acl_refusals_total{{code="unauthenticated"}} ' \
        f'{float(4 * len(v1_routes(server)))}' in metrics


async def test_a_token_without_the_right_gets_403_and_changes_nothing(
        server: Server) -> None:
    """A token whose only rule is on another kind's name: each route refuses it, but
    lists (filtered, as Consul's), the token's own description, the API document and
    the CA's trust bundle."""
    async with Client(server.url, token=server.acl.token()) as admin:
        await admin.kv_put("secret/a", b"1")
        await admin.policy_create("elsewhere", [
            {"kind": "kv", "prefix": "elsewhere/", "access": "write"}])
        weak = await admin.token_create(["elsewhere"], "kv under elsewhere/ only")
    index = server.node.machine.index
    headers = {"X-Meshlet-Token": weak["secret"]}
    open_to_any = {("GET", "/v1/acl/token/self"), ("GET", "/v1/openapi.json"),
                   ("GET", "/v1/ca/roots")}  # the trust bundle: public certificates
    listings = {(m, p) for (m, p), need in (
        ((m, re.sub(r"\{[^}]+\}", "x", c)), n) for (m, c), n in
        server.api.guard.needs.items()) if need.listing}
    for method, path in v1_routes(server):
        status, body = await call(server, method, path, headers)
        if (method, path) in open_to_any | listings:
            assert status == 200, (method, path, body)
            assert "secret/a" not in str(body)
        else:
            assert status == 403, (method, path, body)
            assert body["error"]["code"] == "forbidden"
    assert server.node.machine.index == index
    assert server.node.machine.kv["secret/a"].value == b"1"


async def test_rules_grant_what_they_say(server: Server) -> None:
    async with Client(server.url, token=server.acl.token()) as admin:
        await admin.policy_create("app", [
            {"kind": "kv", "prefix": "app/", "access": "write"},
            {"kind": "kv", "prefix": "app/locked/", "access": "deny"},
            {"kind": "service", "prefix": "", "access": "read"}])
        made = await admin.token_create(["app"])
        await admin.kv_put("app/locked/k", b"x")
        await admin.kv_put("other", b"y")
    async with Client(server.url, token=made["secret"]) as app:
        await app.kv_put("app/a", b"1")
        assert await app.kv_get_raw("app/a") == b"1"
        with pytest.raises(Forbidden, match="may not write kv 'app/locked/k'"):
            await app.kv_put("app/locked/k", b"2")
        with pytest.raises(Forbidden):
            await app.kv_get("other")
        assert [e["key"] for e in await app.kv_list("")] == ["app/a"]
        assert await app.services() == []
        with pytest.raises(Forbidden):
            await app.register(service="web", id="w1", port=80)
        me = await app.token_self()
        assert me["accessor"] == made["accessor"] and me["policies"] == ["app"]
        assert "secret" not in me and "secret_hash" not in me
    assert server.node.machine.kv["app/locked/k"].value == b"x"


async def test_an_agent_token_acts_for_its_own_node_and_runs_nothing(
        server: Server, tmp_path: Path) -> None:
    """The token `meshlet up` gives its agent (the agent policy and the node's
    identity): it registers its node and reports the containers placed there, reads
    the rest, and can neither start a container anywhere nor speak for another node."""
    from meshlet.devmode import agent_token
    admin_secret = server.acl.token() or ""
    async with Client(server.url, token=admin_secret) as admin:
        await admin.container_create("mine", ["true"], "n1")
        await admin.container_create("theirs", ["true"], "n2")
    secret = await agent_token(server.url, admin_secret, tmp_path / "agent.token", "n1")
    assert await agent_token(server.url, admin_secret, tmp_path / "agent.token",
                             "n1") == secret  # kept while the server knows it
    index = server.node.machine.index
    async with Client(server.url, token=secret) as agent:
        assert (await agent.token_self())["node_identities"] == ["n1"]
        await agent.node_register("n1", "127.0.0.1")
        await agent.container_report("mine", status="running", pid=1)
        assert (await agent.container("mine"))[0]["status"] == "running"
        assert {c["name"] for c in (await agent.containers())[0]} == {"mine", "theirs"}
        with pytest.raises(Forbidden):
            await agent.node_register("n2", "127.0.0.2")
        with pytest.raises(Forbidden):
            await agent.container_report("theirs", status="running", pid=1)
        with pytest.raises(Forbidden):
            await agent.container_create("evil", ["id"], "n1")
        with pytest.raises(Forbidden):
            await agent.container_desire("theirs", "stopped")
        with pytest.raises(Forbidden):
            await agent.container_delete("mine")
    state = server.node.machine
    assert state.containers.get("theirs").status != "running"
    assert "evil" not in state.containers.containers and "n2" not in state.nodes.nodes
    assert state.index == index + 2  # the node and the one report, nothing else
    # Moved to another node, it gets a token of its own and the old one is deleted.
    other = await agent_token(server.url, admin_secret, tmp_path / "agent.token", "n2")
    async with Client(server.url, token=admin_secret) as admin:
        agents = [t for t in await admin.tokens() if t["node_identities"]]
    assert other != secret and [t["node_identities"] for t in agents] == [["n2"]]


async def test_a_token_with_only_a_node_identity_sees_only_its_node(
        server: Server) -> None:
    async with Client(server.url, token=server.acl.token()) as admin:
        await admin.container_create("mine", ["true"], "n1")
        await admin.container_create("theirs", ["true"], "n2")
        made = await admin.token_create([], "n1 only", node_identities=["n1"])
    async with Client(server.url, token=made["secret"]) as node:
        assert [c["name"] for c in (await node.containers())[0]] == ["mine"]
        assert (await node.container("mine"))[0]["node"] == "n1"
        with pytest.raises(Forbidden):
            await node.container("theirs")
        with pytest.raises(Forbidden):
            await node.container("absent")  # no such container: not this node's


async def test_the_join_token_opens_the_raft_routes_only(server: Server) -> None:
    join = {"X-Meshlet-Join-Token": JOIN}
    status, body = await call(server, "GET", "/v1/raft/self", join)
    assert status == 200 and body["id"] == "server-1"
    status, body = await call(server, "POST", "/v1/raft/peers", join)
    assert status == 400 and body["error"]["code"] == "invalid"  # let in, body refused
    for method, path in [("GET", "/v1/status"), ("GET", "/v1/kv"),
                         ("DELETE", "/v1/raft/peers/x"), ("GET", "/v1/acl/token/self")]:
        assert (await call(server, method, path, join))[0] == 401, path
    wrong = {"X-Meshlet-Join-Token": JOIN[:-1] + "?"}
    assert (await call(server, "GET", "/v1/raft/self", wrong))[0] == 401


async def test_acl_api_validates_and_protects_the_last_management_token(
        server: Server) -> None:
    async with Client(server.url, token=server.acl.token()) as admin:
        tokens = await admin.tokens()
        assert [t["management"] for t in tokens] == [True]
        with pytest.raises(Conflict, match="last management token"):
            await admin.token_delete(tokens[0]["accessor"])
        status, body = await call(server, "POST", "/v1/acl/policies",
                                  {"X-Meshlet-Token": server.acl.token() or ""})
        assert status == 400 and body["error"]["field"] == "name"
        with pytest.raises(ConfigError, match=r"rules\[0\]\.kind"):
            await admin.policy_create("p", [{"kind": "disk", "access": "read"}])
        assert await admin.policies() == []


async def test_tokens_and_policies_survive_a_restart(tmp_path: Path) -> None:
    srv = await Server.start(tmp_path, "127.0.0.1", 0)
    management = await async_management_token(tmp_path)
    async with Client(srv.url, token=management) as admin:
        await admin.policy_create("ops", [{"kind": "operator", "access": "read",
                                           "prefix": ""}])
        ops = await admin.token_create(["ops"], "operators")
    await srv.stop()
    srv = await Server.start(tmp_path, "127.0.0.1", 0)
    try:
        async with Client(srv.url, token=ops["secret"]) as client:
            assert (await client.status())["leader"] is True
            assert (await client.token_self())["description"] == "operators"
        async with Client(srv.url, token="forged") as client:
            with pytest.raises(Unauthenticated):
                await client.status()
        assert (tmp_path / "management.token").read_text().strip() == management
        assert len(srv.node.machine.acl.tokens) == 2  # no second bootstrap on restart
    finally:
        await srv.stop()


def test_the_management_token_file_is_private(tmp_path: Path) -> None:
    import asyncio

    async def start_and_stop() -> None:
        srv = await Server.start(tmp_path, "127.0.0.1", 0)
        await async_management_token(tmp_path)
        await srv.stop()
    asyncio.run(start_and_stop())
    path = tmp_path / "management.token"
    assert path.stat().st_mode & 0o777 == 0o600
    assert not (tmp_path / "management.token.pending").exists()
    data = b"".join(p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()
                    and p.name != "management.token")
    assert path.read_text().strip().encode() not in data  # the log holds its hash only


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root (to run a reader as nobody)")
def test_an_unprivileged_user_cannot_read_the_management_token() -> None:
    import asyncio
    import shutil
    import tempfile
    root = Path(tempfile.mkdtemp(prefix="meshlet-acl-test-"))  # /tmp: nobody may walk it
    try:
        data = root / "data"

        async def start_and_stop() -> None:
            srv = await Server.start(data, "127.0.0.1", 0)
            await async_management_token(data)
            await srv.stop()
        asyncio.run(start_and_stop())
        os.chmod(root, 0o755)  # every directory open: only the file's own mode protects it
        os.chmod(data, 0o755)
        (data / "control").write_text("readable")
        os.chmod(data / "control", 0o644)

        def as_nobody() -> None:
            os.setgid(65534)
            os.setuid(65534)

        def read(path: Path) -> subprocess.CompletedProcess[str]:
            return subprocess.run(["cat", str(path)], preexec_fn=as_nobody, text=True,
                                  capture_output=True, timeout=30, check=False)
        assert read(data / "control").stdout == "readable"  # nobody can get there
        refused = read(data / "management.token")
        assert refused.returncode != 0 and "Permission denied" in refused.stderr
        assert refused.stdout == ""
    finally:
        shutil.rmtree(root, ignore_errors=True)


async def test_a_crash_between_commit_and_rename_is_finished_at_the_next_start(
        tmp_path: Path) -> None:
    """The secret is written as management.token.pending before it is proposed; if
    the server dies after the commit and before the rename, the next start sees that
    the state holds its hash and renames it, without making a second token."""
    srv = await Server.start(tmp_path, "127.0.0.1", 0)
    secret = await async_management_token(tmp_path)
    await srv.stop()
    (tmp_path / "management.token").rename(tmp_path / "management.token.pending")
    srv = await Server.start(tmp_path, "127.0.0.1", 0)
    try:
        assert await async_management_token(tmp_path) == secret
        assert not (tmp_path / "management.token.pending").exists()
        assert len(srv.node.machine.acl.tokens) == 1
        async with Client(srv.url, token=secret) as client:
            assert (await client.token_self())["management"] is True
    finally:
        await srv.stop()

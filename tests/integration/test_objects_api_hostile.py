"""The objects and pods API against hostile callers, on a real server with ACLs: tokens
without the right, an agent acting beyond its node, a token of one namespace reaching
into another, and bodies and queries built to break the server. Each gets a 4xx with
the error body, and the state does not move."""

from __future__ import annotations

import copy
import os
import stat
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from meshlet.api.client import Client
from meshlet.deploy.kube import load
from meshlet.devmode import agent_token
from meshlet.kube_objects import Deployment, container_spec, template_hash
from meshlet.server.main import Server

WEB = Path(__file__).parents[2] / "examples" / "kube" / "web.yaml"


def web_deployment() -> dict[str, Any]:
    return load(str(WEB))[0].canonical()


def pod_for(node: str, suffix: str, name: str = "web") -> dict[str, Any]:
    dep = load(str(WEB))[0]
    assert isinstance(dep, Deployment)
    return {"name": f"{name}-{template_hash(dep)}-{suffix}", "namespace": "default",
            "deployment": name, "revision": 1, "template_hash": template_hash(dep),
            "node": node, "container": container_spec(dep), "service": "web"}


def tables(server: Server) -> list[Any]:
    machine = server.node.machine
    return [machine.objects.dump(), machine.pods.dump(), machine.acl.index]


async def refused(session: aiohttp.ClientSession, server: Server, method: str, path: str,
                  status: int, **kwargs: Any) -> dict[str, Any]:
    """Send it; assert the answer is ``status`` with an error body and that nothing
    changed in the state (a command the state refuses takes a log index, no more)."""
    before = tables(server)
    async with session.request(method, path, **kwargs) as resp:
        text = await resp.text()
        assert resp.status == status, (method, path, resp.status, text[:300])
        body = await resp.json(content_type=None)
    assert set(body["error"]) >= {"code", "message"}, body
    assert "Traceback" not in text
    assert tables(server) == before, (method, path, "changed the state")
    return body["error"]


def session(server: Server, token: str | None) -> aiohttp.ClientSession:
    headers = {"X-Meshlet-Token": token} if token else {}
    return aiohttp.ClientSession(server.url, headers=headers)


async def setup(server: Server, tmp_path: Path) -> dict[str, str]:
    """web in default and in shop, a pod of web on n1 and n2; tokens: weak (kv only),
    shop (deployment write on shop/), writer (deployment write everywhere), agent (n1)."""
    assert server.controller is not None
    server.controller.cancel()  # pods placed by hand on nodes that never joined
    management = server.acl.token() or ""
    async with Client(server.url, token=management) as client:
        await client.object_apply({"apiVersion": "v1", "kind": "Namespace",
                                   "metadata": {"name": "shop"}})
        await client.object_apply(web_deployment())
        shop_web = web_deployment()
        shop_web["metadata"]["namespace"] = "shop"
        await client.object_apply(shop_web)
        n1 = await client.pod_create(**pod_for("n1", "aaaaa"))
        n2 = await client.pod_create(**pod_for("n2", "bbbbb"))
        await client.policy_create("kv-only", [
            {"kind": "kv", "prefix": "", "access": "write"}])
        await client.policy_create("shop", [
            {"kind": "deployment", "prefix": "shop/", "access": "write"}])
        await client.policy_create("writer", [
            {"kind": "deployment", "prefix": "", "access": "write"}])
        tokens = {name: (await client.token_create([name]))["secret"]
                  for name in ("kv-only", "shop", "writer")}
    tokens["agent"] = await agent_token(server.url, management, tmp_path / "agent.token",
                                        "n1")
    return {**tokens, "n1": n1["name"], "n2": n2["name"]}


STATUS = {"status": {"replicas": 0}, "events": []}
WEB_PATH = "/v1/objects/Deployment/default/web"


async def test_tokens_without_the_right_change_nothing(server: Server,
                                                       tmp_path: Path) -> None:
    t = await setup(server, tmp_path)
    apply = {"manifest": web_deployment()}
    async with session(server, t["kv-only"]) as s:
        for method, path, body in [
                ("POST", "/v1/objects", apply), ("DELETE", WEB_PATH, None),
                ("POST", WEB_PATH + "/scale", {"replicas": 1}),
                ("PUT", WEB_PATH + "/status", STATUS),
                ("GET", WEB_PATH, None),
                ("POST", "/v1/pods", pod_for("n1", "ccccc")),
                ("GET", f"/v1/pods/{t['n1']}", None),
                ("DELETE", f"/v1/pods/{t['n1']}", None),
                ("PUT", f"/v1/pods/{t['n1']}/terminate", None),
                ("PUT", f"/v1/pods/{t['n1']}/report", {"phase": "running"})]:
            await refused(s, server, method, path, 403, json=body)
        async with s.get("/v1/objects") as resp:
            assert resp.status == 200 and await resp.json() == []
        async with s.get("/v1/pods") as resp:
            assert resp.status == 200 and await resp.json() == []
    async with session(server, None) as s:
        await refused(s, server, "POST", "/v1/objects", 401, json=apply)
        await refused(s, server, "PUT", f"/v1/pods/{t['n1']}/report", 401,
                      json={"phase": "running"})
    async with session(server, t["writer"]) as s:  # status and pods: the controller's
        await refused(s, server, "PUT", WEB_PATH + "/status", 403, json=STATUS)
        await refused(s, server, "POST", "/v1/pods", 403, json=pod_for("n1", "ccccc"))
        await refused(s, server, "DELETE", f"/v1/pods/{t['n1']}", 403)


async def test_an_agent_acts_for_its_own_node_only(server: Server, tmp_path: Path) -> None:
    t = await setup(server, tmp_path)
    report = {"phase": "running", "ready": True, "address": "127.0.0.1:1"}
    async with session(server, t["agent"]) as s:
        for method, path, body in [
                ("PUT", f"/v1/pods/{t['n2']}/report", report),
                ("DELETE", f"/v1/pods/{t['n2']}", None),
                ("PUT", f"/v1/pods/{t['n2']}/terminate", None),
                ("PUT", f"/v1/pods/{t['n1']}/terminate", None),
                ("POST", "/v1/pods", pod_for("n1", "ccccc")),
                ("POST", "/v1/pods", pod_for("n2", "ccccc")),
                ("PUT", WEB_PATH + "/status", STATUS),
                ("POST", WEB_PATH + "/scale", {"replicas": 0}),
                ("DELETE", WEB_PATH, None),
                ("POST", "/v1/objects", {"manifest": web_deployment()}),
                ("PUT", "/v1/pods/no-such-pod/report", report)]:
            await refused(s, server, method, path, 403, json=body)
        # Its own pod, alive: it may report, not delete it (only once terminating).
        await refused(s, server, "DELETE", f"/v1/pods/{t['n1']}", 409)
        await refused(s, server, "PUT", f"/v1/pods/{t['n1']}/report", 400,
                      json={**report, "metrics": {"cpu": 1e300}})
        await refused(s, server, "PUT", f"/v1/pods/{t['n1']}/report", 400,
                      json={**report, "metrics": {"memory": 1.0}})
        await refused(s, server, "PUT", f"/v1/pods/{t['n1']}/report", 400,
                      json={**report, "restarts": 2 ** 31})
        await refused(s, server, "PUT", f"/v1/pods/{t['n1']}/report", 400,
                      json={**report, "node": "n2"})
    assert stat.S_IMODE(os.stat(tmp_path / "agent.token").st_mode) == 0o600


async def test_a_namespace_token_stays_in_its_namespace(server: Server,
                                                        tmp_path: Path) -> None:
    t = await setup(server, tmp_path)
    elsewhere = web_deployment()
    elsewhere["spec"]["replicas"] = 7
    namespace = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "evil"}}
    async with session(server, t["shop"]) as s:
        for method, path, body in [
                ("POST", "/v1/objects", {"manifest": elsewhere}),
                ("POST", "/v1/objects", {"manifest": namespace}),
                ("DELETE", "/v1/objects/Namespace/-/shop", None),
                ("DELETE", WEB_PATH, None),
                ("POST", WEB_PATH + "/scale", {"replicas": 1}),
                ("GET", WEB_PATH, None),
                ("GET", f"/v1/pods/{t['n1']}", None),
                ("PUT", f"/v1/pods/{t['n1']}/terminate", None),
                ("PUT", f"/v1/pods/{t['n1']}/report", {"phase": "failed"}),
                ("DELETE", "/v1/objects/Namespace/default/shop", None)]:
            await refused(s, server, method, path, 403, json=body)
        # The path's namespace is the ACL's, and names only a key: ".." is no way out.
        for path in ("/v1/objects/Deployment/shop%2F..%2Fdefault/web",
                     "/v1/objects/Deployment/shop/..%2Fdefault%2Fweb",
                     "/v1/objects/Deployment/-/shop/web"):
            await refused(s, server, "DELETE", path, 404)
        async with s.get("/v1/objects") as resp:
            assert [(o["namespace"], o["name"]) for o in await resp.json()] == [
                ("shop", "web")]
        async with s.get("/v1/pods") as resp:
            assert await resp.json() == []


def manifest_with(path: tuple[str | int, ...], value: Any) -> dict[str, Any]:
    manifest = copy.deepcopy(web_deployment())
    at: Any = manifest
    for key in path[:-1]:
        at = at[key]
    at[path[-1]] = value
    return {"manifest": manifest}


CONTAINER = ("spec", "template", "spec", "containers", 0)


async def test_hostile_bodies_and_queries_get_a_400(server: Server,
                                                    tmp_path: Path) -> None:
    await setup(server, tmp_path)
    deep = b'{"manifest": ' + b"[" * 5000 + b"]" * 5000 + b"}"
    bodies: list[tuple[str, str, dict[str, Any]]] = [
        ("POST", "/v1/objects", {"data": b"\xff\xfe{not json"}),
        ("POST", "/v1/objects", {"data": deep}),
        ("POST", "/v1/objects", {"data": b'{"manifest": {"spec": NaN}}'}),
        ("POST", "/v1/objects", {"data": b'{"manifest": {"a": 1e400}}'}),
        ("POST", "/v1/objects", {"data": b'{"manifest": {"a": ' + b"9" * 5000 + b"}}"}),
        ("POST", "/v1/objects", {"data": b'{"manifest": "' + b"x" * (2 << 20) + b'"}'}),
        ("POST", "/v1/objects", {"json": {"manifest": []}}),
        ("POST", "/v1/objects", {"json": {"manifest": {"apiVersion": "v1",
                                                       "kind": "Pod"}}}),
        ("POST", "/v1/objects", {"json": {"manifest": {"apiVersion": "v1",
                                                       "kind": "Namespace",
                                                       "metadata": {"name": "../x"}}}}),
        ("POST", "/v1/objects", {"json": manifest_with(("metadata", "name"), "Web_1")}),
        ("POST", "/v1/objects", {"json": manifest_with(("spec", "replicas"), -1)}),
        ("POST", "/v1/objects", {"json": manifest_with(("spec", "replicas"), 10 ** 30)}),
        ("POST", "/v1/objects", {"json": manifest_with(("spec", "replicas"), "3")}),
        ("POST", "/v1/objects", {"json": manifest_with(
            ("metadata", "annotations"), {"a": "x" * 200_000})}),
        ("POST", WEB_PATH + "/scale", {"json": {"replicas": -1}}),
        ("POST", WEB_PATH + "/scale", {"json": {"replicas": 1001}}),
        ("POST", WEB_PATH + "/scale", {"json": {"replicas": True}}),
        ("POST", WEB_PATH + "/scale", {"json": {"replicas": 2.5}}),
        ("POST", "/v1/objects/Service/default/web/scale", {"json": {"replicas": 1}}),
        ("PUT", WEB_PATH + "/status", {"json": {"status": {}, "events": [
            {"time": 1.0, "type": "Normal", "reason": "r", "message": "m"}] * 51}}),
        ("PUT", WEB_PATH + "/status", {"json": {"status": {}, "events": [
            {"time": 1.0, "type": "Normal", "reason": "r", "message": "m" * 2000}]}}),
        ("PUT", WEB_PATH + "/status", {"json": {"status": {}, "events": [
            {"time": -1.0, "type": "Fatal", "reason": "r", "message": "m"}]}}),
        ("PUT", WEB_PATH + "/status", {"json": {"status": {"x": "y" * 70_000}}}),
        ("GET", "/v1/objects?kind=Pod", {}),
        ("GET", "/v1/objects?index=-1", {}),
        ("GET", "/v1/objects?index=abc", {}),
        ("GET", "/v1/objects?index=" + "9" * 5000, {}),
        ("GET", "/v1/objects?index=1&wait=1e400s", {}),
        ("GET", "/v1/objects?index=1&wait=-5s", {}),
        ("GET", "/v1/objects?index=1&wait=forever", {}),
        ("GET", "/v1/pods?index=1&wait=nan", {}),
        ("GET", "/v1/objects/Pod/default/web", {}),
        ("DELETE", "/v1/objects/Secret/default/web", {}),
        ("POST", "/v1/pods", {"json": {**pod_for("n1", "ddddd"), "name": "../../etc"}}),
        ("POST", "/v1/pods", {"json": {**pod_for("n1", "ddddd"), "node": "../n1"}}),
        ("POST", "/v1/pods", {"json": {**pod_for("n1", "ddddd"), "created": 1e308 * 10}}),
    ]
    async with session(server, server.acl.token()) as s:
        for method, path, kwargs in bodies:
            error = await refused(s, server, method, path, 400, **kwargs)
            assert error["code"], (path, error)
        for method, path in [("GET", "/v1/objects/Deployment/default/..%2F..%2Fetc"),
                             ("DELETE", "/v1/objects/Deployment/default/..%2Fweb"),
                             ("GET", "/v1/pods/..%2F..%2Fetc%2Fpasswd"),
                             ("PUT", "/v1/pods/..%2Fx/terminate")]:
            await refused(s, server, method, path, 404)
        # An absurd index with a short wait: answers at the wait's end, unchanged.
        async with s.get("/v1/objects", params={"index": str(10 ** 30),
                                                "wait": "10ms"}) as resp:
            assert resp.status == 200


def private(path: Path) -> list[str]:
    """Files and directories under ``path`` that others may read or enter."""
    loose = []
    for root, dirs, files in os.walk(path):
        for name in [*dirs, *files]:
            full = Path(root) / name
            if full.is_symlink() or full.is_socket():
                continue
            if stat.S_IMODE(full.lstat().st_mode) & 0o077:
                loose.append(str(full))
    return loose


async def test_state_and_token_files_are_private(server: Server, tmp_path: Path) -> None:
    await setup(server, tmp_path)
    async with Client(server.url, token=server.acl.token()) as client:
        await client.object_scale("default", "web", 2)
    written = [p for p in tmp_path.rglob("*") if p.is_file()]
    assert any(p.name == "agent.token" for p in written) and len(written) > 2
    assert private(tmp_path) == []


@pytest.mark.parametrize("where, value", [
    (("metadata", "name"), "a" * 240),                  # its pods' names: over 253
    ((*CONTAINER, "args"), ["a\0b"]),                     # no NUL in an argument
    ((*CONTAINER, "args"), ["a" * 5000]),
    ((*CONTAINER, "env"), [{"name": "A", "value": "\0"}]),
    ((*CONTAINER, "env"), [{"name": "A" * 300, "value": "x"}]),
])
async def test_apply_refuses_what_could_never_run(server: Server, where: tuple[Any, ...],
                                                  value: Any) -> None:
    """A Deployment whose pods the state would refuse is refused at apply: accepted,
    it would make the controller fail every pass, for every namespace's Deployments."""
    body = manifest_with(where, value)
    async with session(server, server.acl.token()) as s:
        error = await refused(s, server, "POST", "/v1/objects", 400, json=body)
    assert error["field"].startswith(("metadata.name", "spec.template.spec.containers[0]"))


async def test_one_bad_pod_does_not_stop_the_controller(server: Server) -> None:
    """Should a pod the state refuses come out of the plan anyway, the controller still
    creates the other Deployments' pods."""
    from meshlet.server import deployments
    from tests.conftest import async_wait_until
    async with Client(server.url, token=server.acl.token()) as client:
        await client.node_register("n1", "127.0.0.1")
        await client.object_apply(web_deployment())
        second = web_deployment()
        second["metadata"]["name"] = "zz"
        await client.object_apply(second)
    real = deployments.PodPlanner.pod

    def planner_pod(self: Any, create: Any, name: str) -> dict[str, Any]:
        fields = real(self, create, name)
        return {**fields, "name": "BAD"} if create.deployment == "web" else fields

    deployments.PodPlanner.pod = planner_pod  # type: ignore[method-assign]
    try:
        async def zz_pods() -> bool:
            return any(p.deployment == "zz" for p in server.node.machine.pods.pods.values())
        assert await async_wait_until(zz_pods, timeout=10)
    finally:
        deployments.PodPlanner.pod = real  # type: ignore[method-assign]


async def test_a_namespace_token_cannot_take_a_catalog_service(server: Server,
                                                               tmp_path: Path) -> None:
    """A Deployment's pods join the catalog service of their Service (else of their
    Deployment's name), and their sidecars get that service's identity: applying one
    needs ``service`` write on that name, or ``shop/`` could serve as ``payments``."""
    t = await setup(server, tmp_path)
    payments = web_deployment()
    payments["metadata"].update(name="payments", namespace="shop")
    service = {"apiVersion": "v1", "kind": "Service",
               "metadata": {"name": "payments", "namespace": "shop"},
               "spec": {"selector": {"app": "web"}, "ports": [{"port": 80}]}}
    async with session(server, t["shop"]) as s:
        for manifest in (payments, service):
            error = await refused(s, server, "POST", "/v1/objects", 403,
                                  json={"manifest": manifest})
            assert error["field"] == "service" and "payments" in error["message"]
    async with Client(server.url, token=server.acl.token()) as client:
        await client.policy_create("payments", [
            {"kind": "service", "prefix": "payments", "access": "write"}])
        both = (await client.token_create(["shop", "payments"]))["secret"]
    async with Client(server.url, token=both) as client:
        assert (await client.object_apply(payments))["result"] == "created"
        assert (await client.object_apply(service))["result"] == "created"


async def raw_request(server: Server, head: bytes) -> tuple[int, bytes]:
    """Send ``head`` (request line and headers, as bytes) as is; the status and body."""
    import asyncio
    from urllib.parse import urlsplit
    url = urlsplit(server.url)
    reader, writer = await asyncio.open_connection(url.hostname, url.port)
    writer.write(head + b"Host: x\r\nConnection: close\r\n\r\n")
    await writer.drain()
    answer = await reader.read()
    writer.close()
    await writer.wait_closed()
    status_line, _, rest = answer.partition(b"\r\n")
    return int(status_line.split()[1]), rest.partition(b"\r\n\r\n")[2]


async def test_a_token_header_that_is_not_utf8_is_unknown(server: Server) -> None:
    for header in (b"X-Meshlet-Token: \xff\xfe", b"Authorization: Bearer \xc3\x28",
                   b"X-Meshlet-Join-Token: \xff"):
        status, body = await raw_request(
            server, b"GET /v1/objects HTTP/1.1\r\n" + header + b"\r\n")
        assert status == 401, (header, body)
        assert b'"unauthenticated"' in body


async def test_a_follower_does_not_forward_a_token_that_is_not_utf8(
        server: Server, monkeypatch: pytest.MonkeyPatch) -> None:
    """A follower hands an unknown token to the leader; one that is not ASCII (a real
    secret always is) is unknown everywhere, and is not sent on."""
    monkeypatch.setattr(server.api.guard, "is_leader", lambda: False)
    status, body = await raw_request(
        server, b"GET /v1/objects HTTP/1.1\r\nX-Meshlet-Token: \xff\xfe\r\n")
    assert status == 401, body


@pytest.mark.parametrize("status, headers, body", [
    (200, {"X-Meshlet-Index": "not-a-number"}, b"[]"),
    (200, {}, b"[]"),  # no index header: not a meshlet server's answer
    (200, {"X-Meshlet-Index": "1"}, b"<html>not json</html>"),
    (200, {"X-Meshlet-Index": "1"}, b"[" * 100_000 + b"]" * 100_000),
    (200, {"X-Meshlet-Index": "1"}, b"\xff\xfe"),
    (400, {}, b'{"error": ["not", "an", "object"]}'),
    (400, {}, b'{"error": "text"}'),
    (500, {}, b"[" * 100_000),
])
async def test_the_client_turns_a_hostile_answer_into_a_meshlet_error(
        status: int, headers: dict[str, str], body: bytes) -> None:
    """What a server (or whatever listens at the address) answers is checked: the CLI
    and the agent get a MeshletError, never a ValueError or a RecursionError."""
    from aiohttp import web

    from meshlet.errors import MeshletError

    async def answer(request: web.Request) -> web.Response:
        return web.Response(status=status, body=body, headers=headers)

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", answer)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:
        async with Client(f"http://127.0.0.1:{port}") as client:
            with pytest.raises(MeshletError):
                await client.objects()
            with pytest.raises(MeshletError):
                await client.object_apply(web_deployment())
    finally:
        await runner.cleanup()

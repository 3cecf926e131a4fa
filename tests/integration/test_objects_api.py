"""The objects and pods API on a real server: apply is idempotent, bad manifests are
refused whole, blocking queries wake on change, and ACLs hold: kind ``deployment`` for
objects, the node's identity for an agent's pod reports."""

from __future__ import annotations

import asyncio
import copy
from pathlib import Path
from typing import Any

import pytest

from meshlet.api.client import Client
from meshlet.deploy.kube import load
from meshlet.devmode import agent_token
from meshlet.errors import ConfigError, Conflict, Forbidden, NotFound, Unauthenticated
from meshlet.kube_objects import Deployment, container_spec, template_hash
from meshlet.server.main import Server

WEB = Path(__file__).parents[2] / "examples" / "kube" / "web.yaml"


def web() -> list[dict[str, Any]]:
    return [o.canonical() for o in load(str(WEB))]


def admin(server: Server) -> Client:
    return Client(server.url, token=server.acl.token())


async def test_apply_twice_get_list_scale_delete(server: Server) -> None:
    async with admin(server) as client:
        results = [await client.object_apply(m) for m in web()]
        assert [(r["kind"], r["result"]) for r in results] == [
            ("Deployment", "created"), ("Service", "created")]
        index = server.node.machine.index
        again = [(await client.object_apply(m))["result"] for m in web()]
        assert again == ["unchanged", "unchanged"]
        listed, _ = await client.objects(kind="Deployment")
        assert [o["name"] for o in listed] == ["web"]
        record, at = await client.object("Deployment", "default", "web")
        assert record["manifest"]["spec"]["replicas"] == 3 and record["generation"] == 1
        assert record["revisions"][0]["revision"] == 1
        waiter = asyncio.create_task(client.objects(kind="Deployment", index=at, wait=20))
        await asyncio.sleep(0)
        scaled = await client.object_scale("default", "web", 5)
        assert scaled["result"] == "scaled" and scaled["generation"] == 2
        woke, woke_at = await waiter
        assert woke[0]["manifest"]["spec"]["replicas"] == 5 and woke_at > at
        status = {"observedGeneration": 2, "replicas": 5, "readyReplicas": 5}
        event = {"time": 1.0, "type": "Normal", "reason": "ScalingReplicaSet",
                 "message": "scaled up to 5"}
        body = await client.object_status("Deployment", "default", "web", status, [event])
        assert body["status"] == status and body["events"][0]["count"] == 1
        gone = await client.object_delete("Service", "default", "web")
        assert gone["deleted"] == [{"kind": "Service", "namespace": "default", "name": "web"}]
        with pytest.raises(NotFound):
            await client.object("Service", "default", "web")
        assert server.node.machine.index > index


async def test_bad_manifests_are_refused_with_the_field(server: Server) -> None:
    async with admin(server) as client:
        bad = copy.deepcopy(web()[0])
        bad["spec"]["template"]["spec"]["containers"][0]["imagePullSecrets"] = []
        with pytest.raises(ConfigError) as caught:
            await client.object_apply(bad)
        assert caught.value.field == "spec.template.spec.containers[0].imagePullSecrets"
        assert "unknown field (in Deployment web)" in caught.value.message
        elsewhere = copy.deepcopy(web()[0])
        elsewhere["metadata"]["namespace"] = "shop"
        with pytest.raises(NotFound, match="namespaces 'shop' not found"):
            await client.object_apply(elsewhere)
        with pytest.raises(ConfigError, match="kind"):
            await client.object("Pod", "default", "web")
        assert await client.objects() == ([], 0)
        with pytest.raises(Conflict, match="cannot be deleted"):
            await client.object_delete("Namespace", "", "default")


async def test_namespaces_scope_what_a_token_may_touch(server: Server) -> None:
    async with admin(server) as client:
        await client.object_apply({"apiVersion": "v1", "kind": "Namespace",
                                   "metadata": {"name": "shop"}})
        for namespace in ("shop", None):
            dep = copy.deepcopy(web()[0])
            dep["metadata"]["namespace"] = namespace
            await client.object_apply(dep)
        await client.policy_create("shop", [
            {"kind": "deployment", "prefix": "shop/", "access": "write"}])
        await client.policy_create("kv-only", [
            {"kind": "kv", "prefix": "", "access": "write"}])
        shop = await client.token_create(["shop"])
        weak = await client.token_create(["kv-only"])
    async with Client(server.url, token=shop["secret"]) as client:
        listed, _ = await client.objects()
        assert [(o["kind"], o["namespace"]) for o in listed] == [("Deployment", "shop")]
        assert (await client.object_scale("shop", "web", 1))["result"] == "scaled"
        with pytest.raises(Forbidden):
            await client.object_scale("default", "web", 1)
        with pytest.raises(Forbidden):
            await client.object_delete("Namespace", "", "shop")
    index = server.node.machine.index
    async with Client(server.url, token=weak["secret"]) as client:
        assert (await client.objects())[0] == []
        with pytest.raises(Forbidden):
            await client.object_apply(web()[0])
        with pytest.raises(Forbidden):
            await client.object("Deployment", "default", "web")
    async with Client(server.url) as anonymous:
        with pytest.raises(Unauthenticated):
            await anonymous.object_apply(web()[0])
        with pytest.raises(Unauthenticated):
            await anonymous.objects()
    assert server.node.machine.index == index


def pod_for(node: str, suffix: str) -> dict[str, Any]:
    dep = load(str(WEB))[0]
    assert isinstance(dep, Deployment)
    return {"name": f"web-{template_hash(dep)}-{suffix}", "namespace": "default",
            "deployment": "web", "revision": 1, "template_hash": template_hash(dep),
            "node": node, "container": container_spec(dep), "service": "web"}


async def test_an_agent_reports_and_deletes_only_its_own_pods(server: Server,
                                                              tmp_path: Path) -> None:
    # The test places pods by hand on nodes that never joined: the controller, which
    # would remove them as pods of lost nodes, is stopped.
    assert server.controller is not None
    server.controller.cancel()
    secret = server.acl.token() or ""
    async with admin(server) as client:
        await client.object_apply(web()[0])
        mine = await client.pod_create(**pod_for("n1", "aaaaa"))
        theirs = await client.pod_create(**pod_for("n2", "bbbbb"))
        with pytest.raises(Conflict):
            await client.pod_create(**pod_for("n1", "aaaaa"))
    agent = await agent_token(server.url, secret, tmp_path / "agent.token", "n1")
    async with Client(server.url, token=agent) as client:
        listed, at = await client.pods(node="n1")
        assert [p["name"] for p in listed] == [mine["name"]]
        waiter = asyncio.create_task(client.pods(node="n1", index=at, wait=20))
        await asyncio.sleep(0)
        got = await client.pod_report(mine["name"], "running", True, 0, "",
                                      "127.0.0.1:21000")
        assert got["ready"] is True and (await waiter)[0][0]["phase"] == "running"
        with pytest.raises(Forbidden):
            await client.pod_report(theirs["name"], "running", True)
        with pytest.raises(Conflict, match="not terminating"):
            await client.pod_delete(mine["name"])
        with pytest.raises(Forbidden):
            await client.pod_create(**pod_for("n1", "ccccc"))
        with pytest.raises(Forbidden):
            await client.pod_terminate(mine["name"])
    async with admin(server) as client:
        assert (await client.pod_terminate(mine["name"]))["phase"] == "terminating"
    async with Client(server.url, token=agent) as client:
        await client.pod_delete(mine["name"])
        with pytest.raises(Forbidden):
            await client.pod_delete(theirs["name"])
    async with admin(server) as client:
        assert [p["name"] for p in (await client.pods())[0]] == [theirs["name"]]
        assert (await client.pod(theirs["name"]))["phase"] == "pending"
        await client.pod_delete(theirs["name"])
        assert (await client.pods())[0] == []

"""`meshlet apply | get | describe | scale | rollout | delete` against a real server,
as a kubectl user runs them."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.e2e.helpers import REPO, lone_server, meshlet

WEB = REPO / "examples" / "kube" / "web.yaml"


@pytest.fixture
def run(tmp_path: Path) -> Iterator[Any]:
    with lone_server(tmp_path) as addr:
        yield lambda *a, **kw: meshlet("--addr", addr, *a, home=tmp_path, **kw)


def test_apply_twice_get_scale_rollout_delete(run: Any, tmp_path: Path) -> None:
    assert run("apply", "-f", str(WEB)).stdout == (
        "deployment.apps/web created\nservice/web created\n")
    assert run("apply", "-f", str(WEB)).stdout == (
        "deployment.apps/web unchanged\nservice/web unchanged\n")
    table = run("get", "deployments").stdout.splitlines()
    assert table[0].split() == ["NAME", "READY", "UP-TO-DATE", "AVAILABLE", "AGE"]
    assert table[1].split()[:4] == ["web", "0/3", "0", "0"]
    services = run("get", "svc").stdout.splitlines()
    assert services[0].split() == ["NAME", "TYPE", "CLUSTER-IP", "PORT(S)", "AGE"]
    assert services[1].split()[:4] == ["web", "LoadBalancer", "<none>", "80/TCP"]
    document = json.loads(run("get", "deploy", "web", "-o", "json").stdout)
    assert document["kind"] == "Deployment" and document["spec"]["replicas"] == 3
    assert document["metadata"]["generation"] == 1
    assert document["status"].get("readyReplicas", 0) == 0  # no agent: nothing runs
    listed = yaml.safe_load(run("get", "deploy", "-o", "yaml").stdout)
    assert listed["kind"] == "List" and [i["metadata"]["name"] for i in listed["items"]] \
        == ["web"]
    exported = tmp_path / "exported.yaml"          # what get writes, apply reads back
    exported.write_text(run("get", "deploy", "web", "-o", "yaml").stdout)
    assert run("apply", "-f", str(exported)).stdout == "deployment.apps/web unchanged\n"
    assert run("scale", "deployment", "web", "--replicas", "5").stdout == (
        "deployment.apps/web scaled\n")
    assert run("get", "deploy", "web").stdout.splitlines()[1].split()[1] == "0/5"
    described = run("describe", "deployment", "web").stdout
    assert "Replicas:" in described and "5 desired" in described
    assert "Events:" in described
    changed = WEB.read_text().replace("image: web:1", "image: web:2")
    assert run("apply", "-f", "-", stdin=changed).stdout.startswith(
        "deployment.apps/web configured\n")
    history = run("rollout", "history", "deployment/web").stdout.splitlines()
    assert history[1].split() == ["REVISION", "CHANGE-CAUSE"]
    assert [r.split()[0] for r in history[2:]] == ["1", "2"]
    assert run("rollout", "undo", "deployment/web").stdout == (
        "deployment.apps/web rolled back\n")
    image = json.loads(run("get", "deploy", "web", "-o", "json").stdout)[
        "spec"]["template"]["spec"]["containers"][0]["image"]
    assert image == "web:1"
    waited = run("rollout", "status", "deployment/web", "--timeout", "1s", check=False)
    assert waited.returncode == 1 and "timed out" in waited.stderr
    # The controller has seen the spec, but with no agent no replica is placed.
    assert 'Waiting for deployment "web" rollout to finish: 0 out of 3' in waited.stdout
    assert run("delete", "-f", str(WEB)).stdout == (
        'deployment.apps "web" deleted\nservice "web" deleted\n')
    gone = run("get", "deploy", "web", check=False)
    assert gone.returncode == 1 and gone.stderr == (
        'meshlet: error: deployment.apps "web" not found in namespace "default"\n')


def test_a_bad_manifest_says_file_and_line_and_stores_nothing(run: Any,
                                                              tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(WEB.read_text().replace("replicas: 3", "replicas: 3\n  paused: true"))
    refused = run("apply", "-f", str(bad), check=False)
    assert refused.returncode == 1 and refused.stdout == ""
    assert refused.stderr == (f"meshlet: error: {bad}:12: spec.paused: unknown field "
                              "(in Deployment web)\n")
    assert "Traceback" not in refused.stderr
    assert run("get", "deploy", "-o", "json").stdout.count('"items": []') == 1
    assert run("get", "svc", "-o", "json").stdout.count('"items": []') == 1
    elsewhere = tmp_path / "elsewhere.yaml"
    elsewhere.write_text(WEB.read_text().replace("  name: web\n  labels:",
                                                 "  name: web\n  namespace: shop\n  labels:"))
    refused = run("apply", "-f", str(elsewhere), check=False)
    assert refused.returncode == 1 and 'namespaces "shop" not found' in refused.stderr
    assert json.loads(run("get", "deploy", "-A", "-o", "json").stdout)["items"] == []


def test_namespaces_get_and_delete(run: Any, tmp_path: Path) -> None:
    shop = tmp_path / "shop.yaml"
    shop.write_text("apiVersion: v1\nkind: Namespace\nmetadata:\n  name: shop\n---\n"
                    + WEB.read_text().replace("  name: web\n  labels:",
                                              "  name: web\n  namespace: shop\n  labels:"))
    assert run("apply", "-f", str(shop)).stdout.splitlines()[0] == "namespace/shop created"
    names = [line.split()[0] for line in run("get", "ns").stdout.splitlines()[1:]]
    assert names == ["default", "shop"]
    everywhere = run("get", "deploy", "-A").stdout.splitlines()
    assert everywhere[0].split()[:2] == ["NAMESPACE", "NAME"]
    assert everywhere[1].split()[:2] == ["shop", "web"]
    assert run("get", "deploy", "-n", "shop", "web").stdout.splitlines()[1].startswith("web")
    assert run("delete", "namespace", "shop").stdout == 'namespace "shop" deleted\n'
    assert json.loads(run("get", "deploy", "-A", "-o", "json").stdout)["items"] == []
    assert [s["metadata"]["namespace"] for s in json.loads(
        run("get", "svc", "-A", "-o", "json").stdout)["items"]] == ["default"]
    refused = run("delete", "ns", "default", check=False)
    assert refused.returncode == 1 and "cannot be deleted" in refused.stderr

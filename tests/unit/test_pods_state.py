"""The pods table: the controller places replicas, the agent of each pod's node
reports on it and deletes it once stopped, and nobody else's agent can."""

from __future__ import annotations

import json
from typing import Any

import pytest

from meshlet.errors import ConfigError, Conflict, MeshletError, NotFound
from meshlet.kube_objects import Deployment, container_spec, template_hash
from meshlet.state import StateMachine
from meshlet.state.commands import (
    ObjectApply,
    ObjectDelete,
    PodCreate,
    PodDelete,
    PodReport,
    PodTerminate,
)
from tests.unit.test_networks import Machine, contents
from tests.unit.test_objects_state import deployment, manifests


def with_web() -> tuple[Machine, PodCreate]:
    m = Machine()
    m.apply(ObjectApply(deployment()))
    web = Deployment.model_validate(manifests()[0])
    pod = PodCreate(f"web-{template_hash(web)}-a1b2c", "default", "web", 1,
                    template_hash(web), "n1", container_spec(web), service="web")
    return m, pod


def refused(m: Machine, command: Any, error: type[MeshletError], words: str) -> None:
    before = contents(m.sm)
    with pytest.raises(error, match=words):
        m.apply(command)
    assert contents(m.sm) == before


def test_create_report_terminate_delete() -> None:
    m, pod = with_web()
    made = m.apply(pod)
    assert (made["phase"], made["ready"], made["address"], made["node"]) == (
        "pending", False, "", "n1")
    assert made["container"]["readiness"]["port"] == 8080
    assert m.sm.pods.node_index == {"n1": m.index}
    got = m.apply(PodReport(pod.name, "running", True, 0, "", "127.0.0.1:21000", node="n1"))
    assert got["ready"] is True and got["address"] == "127.0.0.1:21000"
    index = m.sm.pods.index
    m.apply(PodReport(pod.name, "running", True, 0, "", "127.0.0.1:21000", node="n1"))
    assert m.sm.pods.index == index     # the same report again wakes nobody
    refused(m, PodDelete(pod.name, node="n1"), Conflict, "not terminating")
    assert m.apply(PodTerminate(pod.name))["phase"] == "terminating"
    after = m.apply(PodReport(pod.name, "running", True, 1, "", "127.0.0.1:21000", "n1"))
    assert after["phase"] == "terminating" and after["ready"] is False
    m.apply(PodDelete(pod.name, node="n1"))
    assert m.sm.pods.pods == {}


def test_a_report_or_delete_from_another_node_is_refused() -> None:
    m, pod = with_web()
    m.apply(pod)
    refused(m, PodReport(pod.name, "running", True, node="n2"), NotFound, "not on node")
    m.apply(PodTerminate(pod.name))
    refused(m, PodDelete(pod.name, node="n2"), NotFound, "not on node")
    m.apply(PodReport(pod.name, "failed", detail="operator says"))   # no node: operator
    m.apply(PodDelete(pod.name))                                     # the controller


def test_create_is_checked() -> None:
    m, pod = with_web()
    m.apply(pod)
    refused(m, pod, Conflict, "already exists")
    args = pod.__dict__

    def variant(**change: Any) -> PodCreate:
        return PodCreate(**{**args, **change})
    refused(m, variant(name="x", deployment="nope"), NotFound, "not found")
    refused(m, variant(name="Bad_Name"), ConfigError, "pod name")
    refused(m, variant(name="x", node=""), ConfigError, "node")
    refused(m, variant(name="x", revision=0), ConfigError, "revision")
    refused(m, variant(name="x", container={}), ConfigError, "container")
    broken = json.loads(json.dumps(pod.container))
    broken["readiness"]["port"] = 0
    refused(m, variant(name="x", container=broken), ConfigError, "readiness.port")
    refused(m, PodReport(pod.name, "sleeping"), ConfigError, "phase")
    refused(m, PodReport("nope", "running"), NotFound, "not found")


def test_pods_outlive_their_deployment_until_the_controller_deletes_them() -> None:
    m, pod = with_web()
    m.apply(pod)
    m.apply(ObjectDelete("Deployment", "default", "web"))
    assert [p.name for p in m.sm.pods.select(node="n1")] == [pod.name]
    assert m.sm.pods.select(deployment="other") == []


def test_snapshot_round_trip() -> None:
    m, pod = with_web()
    m.apply(pod)
    m.apply(PodReport(pod.name, "running", True, 2, "ok", "10.0.0.1:21000", "n1"))
    again = StateMachine()
    again.restore(m.sm.snapshot())
    assert again.snapshot() == m.sm.snapshot()
    assert again.pods.get(pod.name).restarts == 2
    assert again.pods.objects is again.objects

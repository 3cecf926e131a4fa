"""The objects table: what `meshlet apply`, `delete`, `scale` and the controller's
status writes do to the replicated Kubernetes objects."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest

from meshlet.deploy.kube import parse_documents
from meshlet.errors import ConfigError, Conflict, MeshletError, NotFound
from meshlet.kube_objects import Deployment, template_hash, validate_object
from meshlet.state import StateMachine
from meshlet.state.commands import ObjectApply, ObjectDelete, ObjectScale, ObjectStatus
from meshlet.state.objects import MAX_EVENTS, MAX_MANIFEST_BYTES
from tests.unit.test_networks import Machine, contents

WEB = (Path(__file__).parents[2] / "examples" / "kube" / "web.yaml").read_text()


def manifests(text: str = WEB) -> list[dict[str, Any]]:
    return [o.canonical() for o in parse_documents(text)]


def deployment(image: str = "web:1", **spec: Any) -> dict[str, Any]:
    found = copy.deepcopy(manifests()[0])
    found["spec"]["template"]["spec"]["containers"][0]["image"] = image
    found["spec"].update(spec)
    return found


def namespace(name: str) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}}


def in_namespace(manifest: dict[str, Any], ns: str) -> dict[str, Any]:
    found = copy.deepcopy(manifest)
    found["metadata"]["namespace"] = ns
    return found


def refused(m: Machine, command: Any, error: type[MeshletError], words: str) -> None:
    before = contents(m.sm)
    with pytest.raises(error, match=words):
        m.apply(command)
    assert contents(m.sm) == before


def test_apply_creates_then_is_unchanged_then_configured() -> None:
    m = Machine()
    dep, svc = manifests()
    first = m.apply(ObjectApply(dep))
    assert first == {"kind": "Deployment", "namespace": "default", "name": "web",
                     "result": "created", "generation": 1}
    assert m.apply(ObjectApply(svc))["result"] == "created"
    index = m.sm.objects.index
    assert m.apply(ObjectApply(dep))["result"] == "unchanged"
    assert m.sm.objects.index == index   # nothing woke
    record = m.sm.objects.get("Deployment", "default", "web")
    assert record.manifest["metadata"]["namespace"] == "default"
    assert record.digest and record.create_index == record.modify_index == 1
    labelled = copy.deepcopy(dep)
    labelled["metadata"]["labels"]["tier"] = "front"
    assert m.apply(ObjectApply(labelled)) == {**first, "result": "configured"}
    assert record.generation == 1            # metadata is not spec
    assert m.apply(ObjectApply(deployment(replicas=5)))["generation"] == 2
    assert record.create_index == 1 and record.modify_index == m.index


def test_a_namespace_must_exist_and_takes_its_objects_along() -> None:
    m = Machine()
    dep, svc = manifests()
    refused(m, ObjectApply(in_namespace(dep, "shop")), NotFound,
            "namespaces 'shop' not found")
    assert m.apply(ObjectApply(namespace("shop")))["namespace"] == ""
    m.apply(ObjectApply(in_namespace(dep, "shop")))
    m.apply(ObjectApply(in_namespace(svc, "shop")))
    m.apply(ObjectApply(dep))
    gone = m.apply(ObjectDelete("Namespace", "", "shop"))["deleted"]
    assert [(g["kind"], g["namespace"]) for g in gone] == [
        ("Namespace", ""), ("Deployment", "shop"), ("Service", "shop")]
    assert [r.key for r in m.sm.objects.select()] == [("Deployment", "default", "web")]
    refused(m, ObjectDelete("Namespace", "", "default"), Conflict, "cannot be deleted")
    refused(m, ObjectDelete("Deployment", "shop", "web"), NotFound, "not found")
    refused(m, ObjectDelete("Pod", "default", "web"), ConfigError, "kind")


def test_service_names_are_unique_across_namespaces() -> None:
    m = Machine()
    m.apply(ObjectApply(namespace("shop")))
    svc = manifests()[1]
    m.apply(ObjectApply(svc))
    refused(m, ObjectApply(in_namespace(svc, "shop")), Conflict, "unique across")


def test_a_bad_manifest_changes_nothing() -> None:
    m = Machine()
    bad = deployment()
    bad["spec"]["replicas"] = -1
    refused(m, ObjectApply(bad), ConfigError, "spec.replicas")
    refused(m, ObjectApply({"kind": "Pod"}), ConfigError, "unknown kind")
    huge = deployment()
    huge["metadata"]["annotations"] = {f"k{i}": "x" * 1000 for i in range(200)}
    assert len(json.dumps(huge)) > MAX_MANIFEST_BYTES
    refused(m, ObjectApply(huge), ConfigError, "at most")


def test_revisions_append_move_on_undo_and_keep_the_limit() -> None:
    m = Machine()
    m.apply(ObjectApply(deployment("web:1")))
    cause = deployment("web:2")
    cause["metadata"]["annotations"] = {"kubernetes.io/change-cause": "image web:2"}
    m.apply(ObjectApply(cause))
    record = m.sm.objects.get("Deployment", "default", "web")
    assert [(r["revision"], r["change_cause"]) for r in record.revisions] == [
        (1, ""), (2, "image web:2")]
    m.apply(ObjectApply(deployment("web:2", replicas=4)))   # same template: no revision
    assert len(record.revisions) == 2
    m.apply(ObjectApply(deployment("web:1")))                 # undo to revision 1
    revisions = [(r["revision"], r["template"]["spec"]["containers"][0]["image"])
                 for r in record.revisions]
    assert revisions == [(2, "web:2"), (3, "web:1")]
    for i in range(3, 8):
        m.apply(ObjectApply(deployment(f"web:{i}", revisionHistoryLimit=2)))
    assert [r["revision"] for r in record.revisions] == [6, 7, 8]
    newest = validate_object(record.manifest)
    assert isinstance(newest, Deployment)
    assert record.revisions[-1]["template_hash"] == template_hash(newest)


def test_scale_changes_replicas_and_generation() -> None:
    m = Machine()
    m.apply(ObjectApply(deployment()))
    assert m.apply(ObjectScale("Deployment", "default", "web", 7))["result"] == "scaled"
    record = m.sm.objects.get("Deployment", "default", "web")
    assert record.manifest["spec"]["replicas"] == 7 and record.generation == 2
    assert m.apply(ObjectScale("Deployment", "default", "web", 7))["result"] == "unchanged"
    assert m.apply(ObjectApply(deployment()))["result"] == "configured"   # back to 3
    refused(m, ObjectScale("Deployment", "default", "web", -1), ConfigError, "replicas")
    refused(m, ObjectScale("Service", "default", "web", 1), ConfigError, "only a")
    refused(m, ObjectScale("Deployment", "default", "nope", 1), NotFound, "not found")


def event(reason: str, time: float = 1.0, kind: str = "Normal") -> dict[str, Any]:
    return {"time": time, "type": kind, "reason": reason, "message": f"{reason} happened"}


def test_status_replaces_and_events_merge_repeats() -> None:
    m = Machine()
    m.apply(ObjectApply(deployment()))
    status = {"observedGeneration": 1, "replicas": 3, "readyReplicas": 1}
    m.apply(ObjectStatus("Deployment", "default", "web", status,
                         (event("ScalingReplicaSet"), event("ScalingReplicaSet", 2.0))))
    record = m.sm.objects.get("Deployment", "default", "web")
    assert record.status == status and record.generation == 1
    assert [(e["reason"], e["count"], e["time"]) for e in record.events] == [
        ("ScalingReplicaSet", 2, 2.0)]
    index = m.sm.objects.index
    m.apply(ObjectStatus("Deployment", "default", "web", status))
    assert m.sm.objects.index == index          # the same again wakes nobody
    m.apply(ObjectStatus("Deployment", "default", "web", {"replicas": 3},
                         tuple(event(f"r{i}", i) for i in range(MAX_EVENTS))))
    assert len(record.events) == MAX_EVENTS and record.events[0]["reason"] == "r0"
    assert record.status == {"replicas": 3}
    refused(m, ObjectStatus("Deployment", "default", "web", {}, (event("x", kind="Bad"),)),
            ConfigError, "Normal or Warning")
    refused(m, ObjectStatus("Deployment", "default", "web", [],  # type: ignore[arg-type]
                            ()), ConfigError, "status")
    assert m.apply(ObjectApply(deployment(replicas=2)))["generation"] == 2
    assert record.status == {"replicas": 3}     # an apply keeps the status


def test_snapshot_round_trip_and_old_snapshots() -> None:
    m = Machine()
    m.apply(ObjectApply(namespace("shop")))
    m.apply(ObjectApply(deployment()))
    m.apply(ObjectStatus("Deployment", "default", "web", {"replicas": 1},
                         (event("x"),)))
    again = StateMachine()
    again.restore(m.sm.snapshot())
    assert again.snapshot() == m.sm.snapshot()
    assert again.objects.get("Deployment", "default", "web").revisions
    old = json.loads(m.sm.snapshot())
    del old["objects"], old["pods"]
    fresh = StateMachine()
    fresh.restore(json.dumps(old).encode())
    assert fresh.objects.objects == {} and fresh.pods.pods == {}

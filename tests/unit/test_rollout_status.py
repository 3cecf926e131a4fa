"""`rollout status` and `rollout undo` decided from a Deployment record, and the
kubectl-style ages and names `get` shows."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from meshlet.cli.kube_views import age, kind_of, split_ref
from meshlet.deploy.rollout_status import progress, undo
from meshlet.errors import ConfigError, MeshletError, NotFound


def record(generation: int = 2, wanted: int = 3, **status: Any) -> dict[str, Any]:
    template = {"metadata": {"labels": {"app": "web"}}, "spec": {"containers": []}}
    return {"name": "web", "generation": generation, "status": status,
            "manifest": {"spec": {"replicas": wanted, "template": template}},
            "revisions": [{"revision": 1, "template": {"v": 1}},
                          {"revision": 2, "template": {"v": 2}},
                          {"revision": 3, "template": template}]}


@pytest.mark.parametrize(("status", "done", "line"), [
    ({}, False, "Waiting for deployment spec update to be observed..."),
    ({"observedGeneration": 2, "updatedReplicas": 1}, False,
     'Waiting for deployment "web" rollout to finish: 1 out of 3 new replicas have been '
     "updated..."),
    ({"observedGeneration": 2, "updatedReplicas": 3, "replicas": 4, "readyReplicas": 2},
     False, 'Waiting for deployment "web" rollout to finish: 1 old replicas are pending '
            "termination..."),
    ({"observedGeneration": 2, "updatedReplicas": 3, "replicas": 3, "readyReplicas": 2},
     False, 'Waiting for deployment "web" rollout to finish: 2 of 3 updated replicas are '
            "available..."),
    ({"observedGeneration": 3, "updatedReplicas": 3, "replicas": 3, "readyReplicas": 3},
     True, 'deployment "web" successfully rolled out'),
])
def test_progress(status: dict[str, Any], done: bool, line: str) -> None:
    found = progress(record(**status))
    assert (found.done, found.line) == (done, line)


def test_a_failed_rollout_says_why() -> None:
    failed = record(observedGeneration=2, conditions=[
        {"type": "Available", "status": "True"},
        {"type": "Progressing", "status": "False", "reason": "ProgressDeadlineExceeded",
         "message": 'ReplicaSet "web-abc" has timed out progressing.'}])
    with pytest.raises(MeshletError, match="has timed out progressing"):
        progress(failed)


def test_undo_picks_the_revision_before_or_the_one_asked() -> None:
    manifest, revision = undo(record())
    assert revision == 2 and manifest["spec"]["template"] == {"v": 2}
    assert undo(record(), 1)[0]["spec"]["template"] == {"v": 1}
    with pytest.raises(NotFound, match="revision 9"):
        undo(record(), 9)
    with pytest.raises(ConfigError, match="already matches revision 3"):
        undo(record(), 3)
    lonely = copy.deepcopy(record())
    lonely["revisions"] = lonely["revisions"][-1:]
    with pytest.raises(NotFound, match="no rollout history"):
        undo(lonely)


def test_ages_and_names_as_kubectl_writes_them() -> None:
    assert [age(1000.0, 1000.0 + s) for s in (5, 125, 600, 3 * 3600 + 60, 30 * 3600,
                                             3 * 86400 + 7200, 20 * 86400)] == [
        "5s", "2m5s", "10m", "3h1m", "30h", "3d2h", "20d"]
    assert age(0.0, 5.0) == "<unknown>"
    assert [kind_of(w) for w in ("deploy", "svc", "po", "ns", "hpa", "Deployments")] == [
        "Deployment", "Service", "Pod", "Namespace", "HorizontalPodAutoscaler",
        "Deployment"]
    assert split_ref(("deployment/web",)) == split_ref(("deploy", "web")) == (
        "Deployment", "web")
    with pytest.raises(ConfigError, match="resource type 'foo'"):
        kind_of("foo")

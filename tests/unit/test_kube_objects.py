"""What the server, the controller and the agent read of a Kubernetes object: the
re-validation of a stored dict, the pod template's hash and the container as a pod
runs it."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest

from meshlet.deploy.kube import parse_documents
from meshlet.errors import ConfigError
from meshlet.kube_objects import Deployment, container_spec, template_hash, validate_object

WEB = (Path(__file__).parents[2] / "examples" / "kube" / "web.yaml").read_text()


def web() -> Deployment:
    found = parse_documents(WEB, "web.yaml")[0]
    assert isinstance(found, Deployment)
    return found


def test_a_canonical_dict_validates_back_to_the_same_object() -> None:
    for obj in parse_documents(WEB, "web.yaml"):
        again = validate_object(obj.canonical())
        assert again.canonical() == obj.canonical() and again.spec_hash() == obj.spec_hash()


@pytest.mark.parametrize(("change", "message", "field"), [
    (lambda d: d["spec"].update(replicas="3"), "spec.replicas: must be a valid integer",
     "spec.replicas"),
    (lambda d: d["spec"]["template"]["spec"]["containers"][0].update(hostPort=1),
     "spec.template.spec.containers[0].hostPort: unknown field",
     "spec.template.spec.containers[0].hostPort"),
    (lambda d: d["spec"]["selector"]["matchLabels"].update(app="other"),
     "spec.template.metadata.labels: do not match", "spec.template.metadata.labels"),
    (lambda d: d.update(kind="Pod"), "kind: unknown kind 'Pod'", "kind"),
    (lambda d: d.update(apiVersion="v1"), "apiVersion: Deployment is apps/v1, not 'v1'",
     "apiVersion"),
    (lambda d: d.pop("kind"), "kind: required field", "kind"),
])
def test_refusals_name_the_field_path(change: object, message: str, field: str) -> None:
    data = copy.deepcopy(web().canonical())
    change(data)  # type: ignore[operator]
    with pytest.raises(ConfigError) as caught:
        validate_object(data)
    assert caught.value.message.startswith(message) and caught.value.field == field
    assert caught.value.message.endswith(")")  # "(in Deployment web)", where known


def test_not_an_object_is_refused() -> None:
    for data in ([], "x", None, {1: "x"}):
        with pytest.raises(ConfigError, match="expected a Kubernetes object"):
            validate_object(data)


def test_revision_history_and_progress_deadline_are_kept_with_defaults() -> None:
    spec = web().canonical()["spec"]
    assert spec["revisionHistoryLimit"] == 10 and spec["progressDeadlineSeconds"] == 600
    changed = WEB.replace("  replicas: 3\n", "  replicas: 3\n  revisionHistoryLimit: 2\n")
    again = parse_documents(changed)[0]
    assert again.spec_hash() != web().spec_hash()
    assert template_hash(again) == template_hash(web())  # not part of the template


def test_template_hash_follows_the_pod_template_only() -> None:
    base = template_hash(web())
    assert len(base) == 10 and int(base, 16) >= 0
    assert template_hash(parse_documents(WEB.replace("replicas: 3", "replicas: 5"))[0]) \
        == base
    assert template_hash(parse_documents(WEB.replace("image: web:1", "image: web:2"))[0]) \
        != base


def test_container_spec_resolves_ports_probes_and_limits() -> None:
    spec = container_spec(web())
    assert spec == {
        "name": "web", "image": "web:1",
        "command": ["busybox", "httpd", "-f", "-p", "8080", "-h", "/www"], "args": [],
        "env": {"GREETING": "hello"}, "port": 8080,
        "readiness": {"http": "/", "tcp": False, "port": 8080, "period": 5.0,
                      "timeout": 1.0, "initial_delay": 1.0, "failure_threshold": 3,
                      "success_threshold": 1},
        "liveness": {"http": None, "tcp": True, "port": 8080, "period": 10.0,
                     "timeout": 1.0, "initial_delay": 0.0, "failure_threshold": 3,
                     "success_threshold": 1},
        "memory": 64 * 2 ** 20, "cpus": 0.5, "protocol": "http"}


def test_container_spec_named_ports_and_no_limits() -> None:
    text = """\
apiVersion: apps/v1
kind: Deployment
metadata: {name: api}
spec:
  selector: {matchLabels: {app: api}}
  template:
    metadata: {labels: {app: api}}
    spec:
      containers:
        - name: api
          image: api:1
          ports: [{containerPort: 9000, name: http}]
          readinessProbe: {httpGet: {port: http, path: /ready}}
          env: [{name: A, value: "1"}, {name: A, value: "2"}]
"""
    spec = container_spec(parse_documents(text)[0])  # type: ignore[arg-type]
    assert spec["readiness"]["port"] == 9000 and spec["readiness"]["period"] == 10.0
    assert spec["liveness"] is None and spec["env"] == {"A": "2"}
    assert spec["memory"] == 0 and spec["cpus"] == 0.0 and spec["port"] == 9000

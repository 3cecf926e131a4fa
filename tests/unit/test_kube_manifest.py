"""Kubernetes manifests for `meshlet apply`: what kubectl users write parses unchanged;
everything else is refused with the file, the line, the field path and the object."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from meshlet.deploy.kube import MAX_BYTES, load, parse_documents, read_sources
from meshlet.errors import ConfigError
from meshlet.kube_objects import (
    Deployment,
    HorizontalPodAutoscaler,
    Namespace,
    Service,
    parse_quantity,
)

EXAMPLES = Path(__file__).parents[2] / "examples" / "kube"
WEB = (EXAMPLES / "web.yaml").read_text()

# As the Kubernetes documentation's tutorials write a Deployment and its Service.
TUTORIAL = """\
apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
  labels:
    app: web
spec:
  replicas: 3
  selector:
    matchLabels:
      app: web
  template:
    metadata:
      labels:
        app: web
    spec:
      containers:
      - name: web
        image: web:1
        command: ["busybox", "httpd", "-f", "-p", "8080"]
        ports:
        - containerPort: 8080
        readinessProbe:
          httpGet:
            path: /
            port: 8080
          initialDelaySeconds: 5
          periodSeconds: 10
        resources:
          limits:
            memory: "128Mi"
            cpu: "500m"
---
apiVersion: v1
kind: Service
metadata:
  name: web
spec:
  type: LoadBalancer
  selector:
    app: web
  ports:
  - protocol: TCP
    port: 80
    targetPort: 8080
"""

# `kubectl create deployment web --image=web:1 --dry-run=client -o yaml`, verbatim.
DRY_RUN = """\
apiVersion: apps/v1
kind: Deployment
metadata:
  creationTimestamp: null
  labels:
    app: web
  name: web
spec:
  replicas: 1
  selector:
    matchLabels:
      app: web
  strategy: {}
  template:
    metadata:
      creationTimestamp: null
      labels:
        app: web
    spec:
      containers:
      - image: web:1
        name: web
        resources: {}
status: {}
"""


def refusal(text: str, source: str = "web.yaml") -> str:
    with pytest.raises(ConfigError) as info:
        parse_documents(text, source)
    return str(info.value)


def test_tutorial_web_app_parses_unchanged() -> None:
    deployment, service = parse_documents(TUTORIAL, "web.yaml")
    assert isinstance(deployment, Deployment) and isinstance(service, Service)
    assert (deployment.ref, service.ref) == ("deployment.apps/web", "service/web")
    assert deployment.spec.replicas == 3
    (container,) = deployment.containers
    assert container.command == ["busybox", "httpd", "-f", "-p", "8080"]
    assert container.readiness_probe is not None
    assert container.readiness_probe.http_get is not None
    assert (container.readiness_probe.http_get.path, container.readiness_probe.port) == ("/", 8080)
    assert container.readiness_probe.initial_delay_seconds == 5
    assert container.resources.limits.memory == 128 * 1024 * 1024
    assert container.resources.limits.cpu == 0.5
    assert service.spec.type == "LoadBalancer"
    (port,) = service.spec.ports
    assert (port.port, port.target, port.protocol) == (80, 8080, "TCP")
    assert service.selects(deployment)
    assert deployment.port_number(port.target) == 8080


def test_example_web_app_parses() -> None:
    deployment, service = load(str(EXAMPLES / "web.yaml"))
    assert isinstance(deployment, Deployment) and isinstance(service, Service)
    (container,) = deployment.containers
    assert container.image == "web:1"
    assert [(e.name, e.value) for e in container.env] == [("GREETING", "hello")]
    assert container.liveness_probe is not None and container.liveness_probe.port == 8080
    assert deployment.namespace is None
    assert deployment.spec.strategy.rolling_update.max_surge == "25%"


def test_dry_run_output_parses_and_its_extras_are_ignored() -> None:
    (deployment,) = parse_documents(DRY_RUN)
    assert isinstance(deployment, Deployment)
    canonical = deployment.canonical()
    assert "status" not in canonical and "creationTimestamp" not in canonical["metadata"]
    assert deployment.containers[0].command == []


def test_namespace_and_autoscaler_example() -> None:
    namespace, deployment, service, hpa = load(str(EXAMPLES / "hpa.yaml"))
    assert isinstance(namespace, Namespace) and namespace.ref == "namespace/shop"
    assert isinstance(deployment, Deployment) and deployment.namespace == "shop"
    assert deployment.spec.strategy.rolling_update.max_unavailable == 0
    assert isinstance(service, Service) and service.spec.ports[0].target == "http"
    assert deployment.port_number("http") == 8080
    assert isinstance(hpa, HorizontalPodAutoscaler)
    assert hpa.ref == "horizontalpodautoscaler.autoscaling/catalog"
    spec = hpa.spec
    assert (spec.scale_target_ref.name, spec.min_replicas, spec.max_replicas) == ("catalog", 2, 10)
    cpu, rps, latency = spec.metrics
    assert cpu.resource is not None and cpu.resource.target.average_utilization == 50
    assert rps.pods is not None and rps.pods.metric.name == "requests_per_second"
    assert rps.pods.target.average_value == 100.0
    assert latency.pods is not None and latency.pods.target.average_value == 0.25
    assert spec.behavior.scale_down.stabilization_window_seconds == 120


def test_list_stands_for_its_items_and_empty_documents_are_skipped() -> None:
    text = ("---\n---\napiVersion: v1\nkind: List\nmetadata:\n  resourceVersion: ''\nitems:\n"
            "- apiVersion: v1\n  kind: Namespace\n  metadata: {name: a}\n"
            "- apiVersion: v1\n  kind: Namespace\n  metadata: {name: b}\n---\n")
    assert [o.ref for o in parse_documents(text)] == ["namespace/a", "namespace/b"]
    assert parse_documents("") == [] and parse_documents("# nothing\n---\n") == []


def test_spec_hash_tells_configured_from_unchanged() -> None:
    base = parse_documents(TUTORIAL)[0]
    # Comments, key order, quoting and spelled-out defaults do not change it ...
    same = TUTORIAL.replace("  replicas: 3\n", "  # three\n  replicas: 3\n  strategy: {}\n") \
        .replace('memory: "128Mi"', "memory: 128Mi").replace("imagePullPolicy", "x")
    same = same.replace("        ports:\n", "        imagePullPolicy: Always\n        ports:\n")
    assert parse_documents(same)[0].spec_hash() == base.spec_hash()
    # ... what it asks for does.
    scaled = parse_documents(TUTORIAL.replace("replicas: 3", "replicas: 4"))[0]
    assert scaled.spec_hash() != base.spec_hash()
    relabelled = parse_documents(TUTORIAL.replace("  labels:\n    app: web\nspec",
                                                  "  labels:\n    app: web2\nspec"))[0]
    assert relabelled.spec_hash() != base.spec_hash()


def test_canonical_form_reads_back_to_the_same_object() -> None:
    for obj in [*parse_documents(WEB), *load(str(EXAMPLES / "hpa.yaml"))]:
        again = type(obj).model_validate(obj.canonical())
        assert again.canonical() == obj.canonical() and again.spec_hash() == obj.spec_hash()


C0 = "spec.template.spec.containers[0]"


@pytest.mark.parametrize("old, new, expected", [
    # Unknown fields, at several depths.
    ("kind: Deployment\n", "kind: Deployment\nreplicas: 3\n",
     "web.yaml:6: replicas: unknown field (in Deployment web)"),
    ("  name: web\n  labels:", "  name: web\n  uid: abc\n  labels:",
     "web.yaml:8: metadata.uid: unknown field (in Deployment web)"),
    ("  replicas: 3\n", "  replicas: 3\n  paused: true\n",
     "web.yaml:12: spec.paused: unknown field (in Deployment web)"),
    ("          imagePullPolicy: IfNotPresent\n", "          imagePullSecrets: []\n",
     f"web.yaml:23: {C0}.imagePullSecrets: unknown field (in Deployment web)"),
    ("              protocol: TCP\n", "              hostPort: 80\n",
     f"web.yaml:27: {C0}.ports[0].hostPort: unknown field (in Deployment web)"),
    ("  type: LoadBalancer\n", "  type: LoadBalancer\n  externalName: x\n",
     "web.yaml:55: spec.externalName: unknown field (in Service web)"),
    # Wrong kind and apiVersion.
    ("kind: Service\n", "kind: Ingress\n",
     "web.yaml:50: kind: unknown kind 'Ingress' (known: Deployment, HorizontalPodAutoscaler,"
     " Namespace, Service) (in Ingress web)"),
    ("apiVersion: apps/v1\n", "apiVersion: extensions/v1beta1\n",
     "web.yaml:4: apiVersion: Deployment is apps/v1, not 'extensions/v1beta1' "
     "(in Deployment web)"),
    ("apiVersion: v1\nkind: Service", "apiVersion: apps/v1\nkind: Service",
     "web.yaml:49: apiVersion: Service is v1, not 'apps/v1' (in Service web)"),
    # Values Kubernetes refuses.
    ("      labels:\n        app: web\n", "      labels:\n        app: api\n",
     "web.yaml:17: spec.template.metadata.labels: do not match spec.selector.matchLabels "
     "(app=web) (in Deployment web)"),
    ("  replicas: 3", "  replicas: -1",
     "web.yaml:11: spec.replicas: must be greater than or equal to 0 (in Deployment web)"),
    ("  replicas: 3", "  replicas: '3'",
     "web.yaml:11: spec.replicas: must be a valid integer (in Deployment web)"),
    ("    - protocol: TCP\n      port: 80\n", "    - protocol: TCP\n      port: 0\n",
     "web.yaml:59: spec.ports[0].port: must be greater than or equal to 1 (in Service web)"),
    ("targetPort: 8080", "targetPort: 65536",
     "web.yaml:60: spec.ports[0].targetPort: 65536 is not a port: give 1..65535 "
     "(in Service web)"),
    ("targetPort: 8080", "targetPort: http",
     "web.yaml:60: spec.ports[0].targetPort: no container port named 'http' in "
     "Deployment web (in Service web)"),
    ("    - protocol: TCP\n", "    - protocol: UDP\n",
     "web.yaml:58: spec.ports[0].protocol: must be 'TCP' (in Service web)"),
    ("  type: LoadBalancer", "  type: ExternalName",
     "web.yaml:54: spec.type: must be 'ClusterIP', 'NodePort' or 'LoadBalancer' "
     "(in Service web)"),
    ('              value: "hello"\n',
     "              valueFrom:\n                secretKeyRef: {name: s, key: k}\n",
     f"web.yaml:30: {C0}.env[0].valueFrom: valueFrom (secrets, config maps, field "
     "references) is not supported: give the value itself (in Deployment web)"),
    ('value: "hello"', "value: 8080",
     f"web.yaml:30: {C0}.env[0].value: must be a valid string (in Deployment web)"),
    ("memory: 64Mi", "memory: 64MB",
     f"web.yaml:47: {C0}.resources.limits.memory: '64MB' is not a size such as 64m, "
     "512Mi or 1g (in Deployment web)"),
    ("cpu: 500m", "cpu: lots",
     f"web.yaml:46: {C0}.resources.limits.cpu: 'lots' is not a CPU count"),
    ("cpu: 100m", "cpu: 2",
     f"web.yaml:43: {C0}.resources.requests.cpu: must not exceed limits.cpu"),
    ("  name: web\n  labels:", "  name: Web\n  labels:",
     "web.yaml:7: metadata.name: 'Web' is not a valid name"),
    ("              path: /\n              port: 8080", "              path: /\n"
     "              port: http",
     f"web.yaml:34: {C0}.readinessProbe.httpGet.port: no port named 'http' in container"),
    ("            periodSeconds: 5\n", "            periodSeconds: 0\n",
     f"web.yaml:36: {C0}.readinessProbe.periodSeconds: must be greater than or equal to 1"),
    ("            tcpSocket:\n", "            exec:\n",
     f"web.yaml:38: {C0}.livenessProbe.exec: unknown field (in Deployment web)"),
    ("          image: web:1\n", "",
     f"web.yaml:21: {C0}.image: required field (in Deployment web)"),
    ("              memory: 64Mi\n---", "              memory: 64Mi\n        - name: side\n"
     "          image: web:1\n---",
     "web.yaml:48: spec.template.spec.containers[1]: meshlet runs one container per pod"),
])
def test_refusals_name_file_line_field_and_object(old: str, new: str, expected: str) -> None:
    assert old in WEB
    assert refusal(WEB.replace(old, new, 1)).startswith(expected)


def test_refusals_of_the_autoscaler() -> None:
    hpa = (EXAMPLES / "hpa.yaml").read_text()
    assert refusal(hpa.replace("maxReplicas: 10", "maxReplicas: 1"), "hpa.yaml") == (
        "hpa.yaml:68: spec.maxReplicas: must be at least minReplicas (2) "
        "(in HorizontalPodAutoscaler catalog)")
    assert refusal(hpa.replace("name: requests_per_second", "name: queue_depth"), "h") \
        .startswith("h:79: spec.metrics[1].pods.metric.name: must be 'requests_per_second' "
                    "or 'p95_latency_seconds'")
    assert refusal(hpa.replace("type: Utilization", "type: AverageValue"), "h").startswith(
        "h:74: spec.metrics[0].resource.target.type: must be Utilization for a Resource metric")
    assert refusal(hpa.replace("name: cpu", "name: memory"), "h").startswith(
        "h:72: spec.metrics[0].resource.name: must be 'cpu'")
    assert refusal(hpa.replace("averageValue: 250m", "averageValue: fast"), "h").startswith(
        "h:89: spec.metrics[2].pods.target.averageValue: 'fast' is not a quantity")
    assert refusal(hpa.replace("maxUnavailable: 0", "maxUnavailable: 0%")
                   .replace("maxSurge: 1", "maxSurge: 0"), "h").startswith(
        "h:23: spec.strategy.rollingUpdate.maxUnavailable: must not be 0 when maxSurge is 0")
    assert refusal(hpa.replace("maxSurge: 1", "maxSurge: lots"), "h").startswith(
        "h:22: spec.strategy.rollingUpdate.maxSurge: must be a number of pods or a percentage")
    assert refusal(hpa.replace("stabilizationWindowSeconds: 120",
                               "stabilizationWindowSeconds: 7200"), "h").startswith(
        "h:92: spec.behavior.scaleDown.stabilizationWindowSeconds: must be less than")


@pytest.mark.parametrize("text, expected", [
    ("apiVersion: v1\nkind: Namespace\nmetadata:\n  name: a\n  name: b\n",
     "web.yaml:5: metadata.name: duplicate key (first at line 4)"),
    ("apiVersion: v1\nmetadata: {name: a}\n", "web.yaml:1: kind: required field (in a)"),
    ("- a\n", "web.yaml:1: document: expected a Kubernetes object"),
    ("apiVersion: v1\nkind: Namespace\nmetadata:\n  name: a\n  labels: {on: x}\n",
     "web.yaml:5: metadata.labels: key True is not a string: quote it (in Namespace a)"),
    ("apiVersion: v1\nkind: Namespace\nmetadata: {name: a, namespace: b}\n",
     "web.yaml:3: metadata.namespace: a Namespace is not inside a namespace"),
    ("kind: List\napiVersion: v1\nitems:\n- kind: List\n  apiVersion: v1\n  items: []\n",
     "web.yaml:4: items[0].kind: a List inside a List is not accepted"),
    ("metadata: [\n", "web.yaml:2: not valid YAML"),
    ("a: &x [1]\nb: *x\n", "web.yaml:1: YAML anchors and aliases are not accepted"),
    ("a: " + "[" * 33 + "]" * 33 + "\n", "web.yaml:1: nested more than 32 deep"),
    ("apiVersion: v1\nkind: Namespace\nmetadata: {name: a}\n---\n" * 1001,
     "web.yaml:4000: more than 1000 documents"),
    # Scalars the YAML constructor itself fails on (a ValueError, not a YAMLError).
    ("apiVersion: v1\nkind: Namespace\nmetadata: {name: a}\n---\nreplicas: " + "9" * 5000
     + "\n", "web.yaml:5: not valid YAML: an integer of more than 4300 digits"),
    ("a: 1\n---\nwhen: 2020-13-45\n", "web.yaml:3: not valid YAML: month must be in 1..12"),
])
def test_refusals_of_documents(text: str, expected: str) -> None:
    assert refusal(text).startswith(expected)


def test_text_beyond_one_mebibyte_is_refused_before_parsing() -> None:
    text = "# " + "x" * MAX_BYTES + "\n"
    assert refusal(text) == f"web.yaml: is {len(text)} bytes; at most {MAX_BYTES} are allowed"


def test_quantities() -> None:
    assert [parse_quantity(q) for q in ("100", "250m", "1.5k", "2Ki", "1e3", 7)] == \
        [100.0, 0.25, 1500.0, 2048.0, 1000.0, 7.0]
    for bad in ("", "1x", "-", ".", True, "1e999"):
        with pytest.raises(ValueError):
            parse_quantity(bad)


def test_read_sources_file_directory_and_stdin(tmp_path: Path) -> None:
    (tmp_path / "b.yml").write_text("apiVersion: v1\nkind: Namespace\nmetadata: {name: b}\n")
    (tmp_path / "a.yaml").write_text("apiVersion: v1\nkind: Namespace\nmetadata: {name: a}\n")
    (tmp_path / "notes.txt").write_text("not a manifest")
    assert [o.name for o in load(str(tmp_path))] == ["a", "b"]
    assert [s for s, _ in read_sources(str(tmp_path / "a.yaml"))] == [str(tmp_path / "a.yaml")]
    assert [o.name for o in load("-", io.StringIO(WEB))] == ["web", "web"]
    with pytest.raises(ConfigError, match=r"cannot read .*missing\.yaml"):
        read_sources(str(tmp_path / "missing.yaml"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(ConfigError, match=r"no \.yaml"):
        read_sources(str(tmp_path / "empty"))
    (tmp_path / "bad.yaml").write_bytes(b"apiVersion: v1\nkind: \xff\n")
    with pytest.raises(ConfigError, match=r"bad\.yaml"):
        load(str(tmp_path / "bad.yaml"))


# --- robustness: whatever the text, a ConfigError or objects, never another exception ---

_scalars = st.one_of(st.none(), st.booleans(), st.integers(-2**70, 2**70), st.floats(),
                     st.text(max_size=12), st.sampled_from(["80", "500m", "64Mi", "web", "/",
                                                            "25%", "TCP", "apps/v1", "v1"]))
_keys = st.sampled_from(["apiVersion", "kind", "metadata", "name", "spec", "replicas",
                         "selector", "matchLabels", "template", "labels", "containers",
                         "image", "ports", "port", "targetPort", "containerPort", "env",
                         "value", "valueFrom", "resources", "limits", "memory", "cpu",
                         "httpGet", "readinessProbe", "items", "metrics", "type", "x"])
_values = st.recursive(_scalars, lambda inner: st.one_of(
    st.lists(inner, max_size=4), st.dictionaries(_keys, inner, max_size=5)), max_leaves=30)


def _parses_or_config_error(text: str) -> None:
    try:
        parse_documents(text, "fuzz.yaml")
    except ConfigError as exc:
        assert str(exc).startswith("fuzz.yaml")


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.text(max_size=300))
def test_random_text_is_only_ever_a_config_error(text: str) -> None:
    _parses_or_config_error(text)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(_values, max_size=3),
       st.sampled_from(["Deployment", "Service", "Namespace", "HorizontalPodAutoscaler",
                        "List"]))
def test_random_objects_are_only_ever_a_config_error(docs: list[object], kind: str) -> None:
    api = {"Deployment": "apps/v1", "HorizontalPodAutoscaler": "autoscaling/v2"}.get(kind, "v1")
    shaped = [{"apiVersion": api, "kind": kind, **d} if isinstance(d, dict) else d
              for d in docs]
    _parses_or_config_error(yaml.safe_dump_all(shaped))


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.integers(0, len(WEB) - 1), st.integers(0, 20), st.text(max_size=8))
def test_edited_web_manifest_is_only_ever_a_config_error(at: int, cut: int, insert: str) -> None:
    _parses_or_config_error(WEB[:at] + insert + WEB[at + cut:])

"""The Kubernetes objects ``meshlet apply`` understands, as Kubernetes spells them.

``v1 Namespace``, ``apps/v1 Deployment``, ``v1 Service`` and ``autoscaling/v2
HorizontalPodAutoscaler``, each with only the fields meshlet acts on. Models are strict
(``replicas: "3"`` and ``value: 8080`` are refused, as the API server refuses them),
frozen, and refuse unknown fields, so a field meshlet would silently not honour is an
error instead.

Accepted and ignored, because Kubernetes users and tools write them and they change
nothing here (they are left out of ``canonical()`` and ``spec_hash()``):

- ``status`` (any content): server-written; ``kubectl create --dry-run=client -o yaml``
  emits ``status: {}``.
- ``metadata.creationTimestamp`` and ``metadata.generation`` (also on the pod template):
  server-written; dry-run output carries ``creationTimestamp: null``.
- ``imagePullPolicy``: images come from ``meshlet image import``; nothing is pulled.
- ``terminationMessagePath``, ``terminationMessagePolicy``: ``kubectl get -o yaml``
  output; meshlet keeps logs, not termination messages.
- ``resources.requests`` (``cpu``, ``memory``): scheduling hints; checked as quantities
  and against the limits, as Kubernetes does, then ignored: meshlet enforces limits.
- ``restartPolicy: Always`` and ``dnsPolicy: ClusterFirst``: the only values meshlet
  behaves as (any other value is refused).
- ``sessionAffinity: None`` on a Service: the default (``ClientIP`` is refused).
- ``protocol: TCP`` on container and Service ports: the only protocol carried (kept in
  the canonical form; ``UDP``/``SCTP`` are refused).

Honoured on a Deployment, so kept in ``canonical()`` and ``spec_hash()``:
``revisionHistoryLimit`` (default 10: how many old pod templates the store keeps for
``meshlet rollout history`` and ``rollout undo``) and ``progressDeadlineSeconds``
(default 600: how long a rollout may make no progress before the controller marks it
failed, condition ``Progressing=False``).

Refused, because they would change behaviour: ``minReadySeconds``, ``paused``,
``strategy.type: Recreate``, ``hostPort``, ``exec`` probes, ``valueFrom``,
``matchExpressions``, ``resourceVersion`` and ``uid`` (preconditions in Kubernetes).

``problems()`` on each object returns the cross-field errors Kubernetes also refuses
(selector not matching the template's labels, duplicate names, ...) as
``(path, message)``; :mod:`meshlet.deploy.kube` turns paths into file lines.
``validate_object(data)`` is the same check without lines, for a dict a client sent
(the server re-validates what it stores). ``template_hash`` and ``container_spec`` give
the controller and the agent a Deployment's pod template as they use it.

Pure, and a leaf below ``state``, ``api`` and ``deploy``: each of them reads these models.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from collections.abc import Iterator
from typing import Annotated, Any, ClassVar, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError, field_validator
from pydantic.alias_generators import to_camel

from meshlet.errors import ConfigError, MeshletError
from meshlet.quantities import parse_cpus, parse_memory

Loc = tuple[str | int, ...]
Problem = tuple[Loc, str]

INT32_MAX = 2 ** 31 - 1
MAX_REPLICAS = 1000     # every replica is a process on one of a few hosts
MAX_REVISIONS = 100     # revisionHistoryLimit: each old template is kept in the store
# What a pod record holds (``state/pods.check_container``): a manifest beyond these
# would be stored, and then its pods refused, pass after pass of the controller.
MAX_ARG_TEXT = 4096     # characters in one argument or environment value
MAX_ARGS = 4096         # arguments in command or args; variables in env
MAX_ENV_NAME = 255
# A pod is named DEPLOYMENT-HASH-SUFFIX (10 and 5 characters), a DNS subdomain.
MAX_DEPLOYMENT_NAME = 253 - 17
_LABEL = r"[a-z0-9]([-a-z0-9]*[a-z0-9])?"
DNS1123_LABEL = re.compile(_LABEL)
DNS1123_SUBDOMAIN = re.compile(rf"{_LABEL}(\.{_LABEL})*")
DNS1035_LABEL = re.compile(r"[a-z]([-a-z0-9]*[a-z0-9])?")
IANA_SVC_NAME = re.compile(r"(?=.*[a-z])(?!.*--)[a-z0-9]([-a-z0-9]*[a-z0-9])?")
_QUALIFIED = re.compile(r"([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]")
ENV_NAME = re.compile(r"[-._a-zA-Z][-._a-zA-Z0-9]*")
IMAGE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._/:@-]{0,254}")
_QUANTITY = re.compile(r"([+-]?(?:[0-9]{1,18}(?:\.[0-9]{0,18})?|\.[0-9]{1,18}))"
                       r"(Ki|Mi|Gi|Ti|Pi|Ei|m|k|M|G|T|P|E|[eE][+-]?[0-9]{1,2})?")
_SUFFIX = {"": 1.0, "m": 1e-3, "k": 1e3, "M": 1e6, "G": 1e9, "T": 1e12, "P": 1e15,
           "E": 1e18, "Ki": 2.0 ** 10, "Mi": 2.0 ** 20, "Gi": 2.0 ** 30, "Ti": 2.0 ** 40,
           "Pi": 2.0 ** 50, "Ei": 2.0 ** 60}


def is_dns1123_label(name: str) -> bool:
    return len(name) <= 63 and DNS1123_LABEL.fullmatch(name) is not None


def is_dns1123_subdomain(name: str) -> bool:
    return len(name) <= 253 and DNS1123_SUBDOMAIN.fullmatch(name) is not None


def is_dns1035_label(name: str) -> bool:
    return len(name) <= 63 and DNS1035_LABEL.fullmatch(name) is not None


def parse_quantity(value: object) -> float:
    """A Kubernetes quantity (``100``, ``500m``, ``1.5k``, ``2Gi``, ``1e3``) as a float;
    raises ValueError."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        number = float(value)
    else:
        found = _QUANTITY.fullmatch(value) if isinstance(value, str) else None
        if found is None:
            raise ValueError(f"{value!r} is not a quantity such as 100, 500m or 2k")
        suffix = found.group(2) or ""
        scale = 10.0 ** int(suffix[1:]) if suffix[:1] in "eE" and suffix else _SUFFIX[suffix]
        number = float(found.group(1)) * scale
    if not math.isfinite(number) or number < 0:
        raise ValueError(f"{value!r} is not a finite, non-negative quantity")
    return number


def _port_or_name(value: Any) -> Any:
    """Kubernetes' IntOrString for ports: 1..65535, or an IANA service name."""
    if isinstance(value, int) and not isinstance(value, bool):
        if not 1 <= value <= 65535:
            raise ValueError(f"{value} is not a port: give 1..65535")
        return value
    if isinstance(value, str):
        if len(value) > 15 or not IANA_SVC_NAME.fullmatch(value):
            raise ValueError(f"{value!r} is not a port name (at most 15 lowercase letters, "
                             "digits and '-', with a letter)")
        return value
    raise ValueError("must be a port number or a port name")


def _int_or_percent(value: Any) -> Any:
    if isinstance(value, int) and not isinstance(value, bool):
        if not 0 <= value <= INT32_MAX:
            raise ValueError("must be 0 or more")
        return value
    if isinstance(value, str) and re.fullmatch(r"[0-9]{1,3}%", value) \
            and int(value[:-1]) <= 100:
        return value
    raise ValueError("must be a number of pods or a percentage such as '25%'")


Port = Annotated[int, Field(ge=1, le=65535)]
PortOrName = Annotated[int | str, BeforeValidator(_port_or_name)]
IntOrPercent = Annotated[int | str, BeforeValidator(_int_or_percent)]
Seconds = Annotated[int, Field(ge=0, le=INT32_MAX)]
Positive = Annotated[int, Field(ge=1, le=INT32_MAX)]
Ignored = Annotated[Any, Field(exclude=True)]


class KubeModel(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True,
                              alias_generator=to_camel)


def _label_problems(loc: Loc, labels: dict[str, str], values: bool = True
                    ) -> Iterator[Problem]:
    """Kubernetes' rules for label (and, ``values=False``, annotation) keys and values."""
    for key, value in labels.items():
        prefix, _, name = key.rpartition("/")
        if (prefix and not is_dns1123_subdomain(prefix)) or len(name) > 63 \
                or not _QUALIFIED.fullmatch(name):
            yield (*loc, key), (f"{key!r} is not a valid key (an optional DNS prefix and "
                                "'/', then at most 63 letters, digits, '-', '_' or '.')")
        elif values and value and (len(value) > 63 or not _QUALIFIED.fullmatch(value)):
            yield (*loc, key), (f"{value!r} is not a valid label value (at most 63 letters, "
                                "digits, '-', '_' or '.', starting and ending alphanumeric)")


class ObjectMeta(KubeModel):
    name: str
    namespace: str | None = None
    labels: dict[str, str] = {}
    annotations: dict[str, str] = {}
    creation_timestamp: Ignored = None
    generation: Ignored = None

    def problems(self, name_rule: str) -> Iterator[Problem]:
        check = {"label": is_dns1123_label, "subdomain": is_dns1123_subdomain,
                 "dns1035": is_dns1035_label}[name_rule]
        if not check(self.name):
            what = {"label": "lowercase letters, digits and '-', at most 63",
                    "subdomain": "lowercase letters, digits, '-' and '.', at most 253",
                    "dns1035": "a lowercase letter, then lowercase letters, digits and '-',"
                               " at most 63"}[name_rule]
            yield ("metadata", "name"), f"{self.name!r} is not a valid name ({what})"
        if self.namespace is not None and not is_dns1123_label(self.namespace):
            yield ("metadata", "namespace"), f"{self.namespace!r} is not a valid namespace"
        yield from _label_problems(("metadata", "labels"), self.labels)
        yield from _label_problems(("metadata", "annotations"), self.annotations, False)


class KubeObjectBase(KubeModel):
    api_version: str
    kind: str
    metadata: ObjectMeta
    status: Ignored = None

    # kubectl's names for what `apply` prints: "deployment.apps/web configured".
    resource: ClassVar[str] = ""
    name_rule: ClassVar[str] = "subdomain"

    @property
    def name(self) -> str:
        return self.metadata.name

    @property
    def namespace(self) -> str | None:
        return self.metadata.namespace

    @property
    def ref(self) -> str:
        """``deployment.apps/web``: how kubectl names the object in its output."""
        return f"{self.resource}/{self.metadata.name}"

    def canonical(self) -> dict[str, Any]:
        """The object with defaults filled in and ignored fields left out: what to store,
        and what ``model_validate`` reads back to an equal object."""
        return self.model_dump(mode="json", by_alias=True)

    def spec_hash(self) -> str:
        """Equal for objects that mean the same: tells ``created`` from ``configured``
        from ``unchanged``."""
        text = json.dumps(self.canonical(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(text.encode()).hexdigest()

    def problems(self) -> Iterator[Problem]:
        yield from self.metadata.problems(self.name_rule)


# --- Namespace ----------------------------------------------------------------------------

class NamespaceSpec(KubeModel):
    finalizers: Ignored = None   # ["kubernetes"] in `kubectl get -o yaml`


class Namespace(KubeObjectBase):
    api_version: Literal["v1"]
    kind: Literal["Namespace"]
    spec: Annotated[NamespaceSpec, Field(exclude=True)] = NamespaceSpec()
    resource = "namespace"
    name_rule = "label"

    def problems(self) -> Iterator[Problem]:
        yield from super().problems()
        if self.metadata.namespace is not None:
            yield ("metadata", "namespace"), "a Namespace is not inside a namespace"


# --- Deployment ---------------------------------------------------------------------------

class EnvVar(KubeModel):
    name: str
    value: str = ""
    value_from: Ignored = None

    @field_validator("value_from", mode="before")
    @classmethod
    def _no_value_from(cls, value: Any) -> Any:
        raise ValueError("valueFrom (secrets, config maps, field references) is not "
                         "supported: give the value itself")

    @field_validator("name")
    @classmethod
    def _env_name(cls, value: str) -> str:
        if not ENV_NAME.fullmatch(value):
            raise ValueError(f"{value!r} is not a valid environment variable name")
        return value


class ContainerPort(KubeModel):
    container_port: Port
    name: str | None = None
    protocol: Literal["TCP"] = "TCP"

    @field_validator("name")
    @classmethod
    def _name(cls, value: str | None) -> str | None:
        return None if value is None else str(_port_or_name(value))


class HTTPGetAction(KubeModel):
    path: str = "/"
    port: PortOrName
    scheme: Literal["HTTP"] = "HTTP"

    @field_validator("path")
    @classmethod
    def _path(cls, value: str) -> str:
        if not value.startswith("/"):
            raise ValueError("must start with '/'")
        return value


class TCPSocketAction(KubeModel):
    port: PortOrName


class Probe(KubeModel):
    http_get: HTTPGetAction | None = None
    tcp_socket: TCPSocketAction | None = None
    initial_delay_seconds: Seconds = 0
    period_seconds: Positive = 10
    timeout_seconds: Positive = 1
    failure_threshold: Positive = 3
    success_threshold: Positive = 1

    @property
    def port(self) -> int | str:
        action = self.http_get or self.tcp_socket
        assert action is not None, "problems() requires one action"
        return action.port


def _limit(kind: str, value: Any) -> Any:
    try:
        return None if value is None else (parse_memory(value, kind, kubernetes=True)
                                           if kind == "memory" else parse_cpus(value, kind))
    except MeshletError as exc:
        raise ValueError(str(exc).removeprefix(f"{kind}: ")) from None


class Limits(KubeModel):
    cpu: float | None = None
    memory: int | None = None        # bytes

    @field_validator("cpu", "memory", mode="before")
    @classmethod
    def _quantity(cls, value: Any, info: Any) -> Any:
        return _limit(str(info.field_name), value)


class Requests(KubeModel):
    cpu: float | None = None
    memory: float | None = None

    @field_validator("cpu", "memory", mode="before")
    @classmethod
    def _quantity(cls, value: Any) -> Any:
        return None if value is None else parse_quantity(value)


class Resources(KubeModel):
    limits: Limits = Limits()
    requests: Annotated[Requests, Field(exclude=True)] = Requests()


class Container(KubeModel):
    name: str
    image: str
    command: list[str] = []
    args: list[str] = []
    env: list[EnvVar] = []
    ports: list[ContainerPort] = []
    readiness_probe: Probe | None = None
    liveness_probe: Probe | None = None
    resources: Resources = Resources()
    image_pull_policy: Annotated[Literal["Always", "IfNotPresent", "Never"] | None,
                                 Field(exclude=True)] = None
    termination_message_path: Annotated[str | None, Field(exclude=True)] = None
    termination_message_policy: Annotated[
        Literal["File", "FallbackToLogsOnError"] | None, Field(exclude=True)] = None

    @field_validator("image")
    @classmethod
    def _image(cls, value: str) -> str:
        if not IMAGE.fullmatch(value):
            raise ValueError(f"{value!r} is not an image reference")
        return value

    def port_number(self, port: int | str) -> int | None:
        """A number as is; a name as the number of this container's port of that name."""
        if isinstance(port, int):
            return port
        return next((p.container_port for p in self.ports if p.name == port), None)

    def problems(self, loc: Loc) -> Iterator[Problem]:
        if not is_dns1123_label(self.name):
            yield (*loc, "name"), f"{self.name!r} is not a valid container name"
        for field, args in (("command", self.command), ("args", self.args)):
            if len(args) > MAX_ARGS:
                yield (*loc, field), f"at most {MAX_ARGS} arguments"
            for i, arg in enumerate(args):
                if len(arg) > MAX_ARG_TEXT or "\0" in arg:
                    yield (*loc, field, i), (f"at most {MAX_ARG_TEXT} characters, "
                                             "and no NUL")
        if len(self.env) > MAX_ARGS:
            yield (*loc, "env"), f"at most {MAX_ARGS} variables"
        for i, var in enumerate(self.env):
            if len(var.name) > MAX_ENV_NAME:
                yield (*loc, "env", i, "name"), f"at most {MAX_ENV_NAME} characters"
            if len(var.value) > MAX_ARG_TEXT or "\0" in var.value:
                yield (*loc, "env", i, "value"), (f"at most {MAX_ARG_TEXT} characters, "
                                                  "and no NUL")
        seen: dict[str, int] = {}
        for i, port in enumerate(self.ports):
            if port.name is not None and seen.setdefault(port.name, i) != i:
                yield (*loc, "ports", i, "name"), f"duplicate port name {port.name!r}"
        for field, probe in (("readinessProbe", self.readiness_probe),
                             ("livenessProbe", self.liveness_probe)):
            if probe is None:
                continue
            if (probe.http_get is None) == (probe.tcp_socket is None):
                yield (*loc, field), "give exactly one of httpGet or tcpSocket"
                continue
            action = "httpGet" if probe.http_get is not None else "tcpSocket"
            if self.port_number(probe.port) is None:
                yield (*loc, field, action, "port"), (f"no port named {probe.port!r} in "
                                                      f"container {self.name!r}")
            if field == "livenessProbe" and probe.success_threshold != 1:
                yield (*loc, field, "successThreshold"), "must be 1 for a livenessProbe"
        limits, requests = self.resources.limits, self.resources.requests
        for what in ("cpu", "memory"):
            asked, cap = getattr(requests, what), getattr(limits, what)
            if asked is not None and cap is not None and asked > cap:
                yield (*loc, "resources", "requests", what), f"must not exceed limits.{what}"


class PodSpec(KubeModel):
    containers: list[Container] = Field(min_length=1)
    termination_grace_period_seconds: Seconds = 30
    restart_policy: Annotated[Literal["Always"], Field(exclude=True)] = "Always"
    dns_policy: Annotated[Literal["ClusterFirst"], Field(exclude=True)] = "ClusterFirst"


class TemplateMeta(KubeModel):
    labels: dict[str, str] = Field(min_length=1)
    annotations: dict[str, str] = {}
    name: Ignored = None
    creation_timestamp: Ignored = None
    generation: Ignored = None


class PodTemplate(KubeModel):
    metadata: TemplateMeta
    spec: PodSpec


class LabelSelector(KubeModel):
    match_labels: dict[str, str] = Field(min_length=1)
    match_expressions: Ignored = None

    @field_validator("match_expressions", mode="before")
    @classmethod
    def _no_expressions(cls, value: Any) -> Any:
        raise ValueError("matchExpressions is not supported: select with matchLabels")


class RollingUpdate(KubeModel):
    max_surge: IntOrPercent = "25%"
    max_unavailable: IntOrPercent = "25%"


class Strategy(KubeModel):
    type: Literal["RollingUpdate"] = "RollingUpdate"
    rolling_update: RollingUpdate = RollingUpdate()


class DeploymentSpec(KubeModel):
    replicas: int = Field(default=1, ge=0, le=MAX_REPLICAS)
    selector: LabelSelector
    template: PodTemplate
    strategy: Strategy = Strategy()
    revision_history_limit: int = Field(default=10, ge=0, le=MAX_REVISIONS)
    progress_deadline_seconds: Positive = 600


class Deployment(KubeObjectBase):
    api_version: Literal["apps/v1"]
    kind: Literal["Deployment"]
    spec: DeploymentSpec
    resource = "deployment.apps"

    @property
    def containers(self) -> list[Container]:
        return self.spec.template.spec.containers

    def port_number(self, port: int | str) -> int | None:
        """``targetPort`` resolved against the pod's containers (None: no such name)."""
        return next((n for c in self.containers if (n := c.port_number(port)) is not None),
                    None)

    def problems(self) -> Iterator[Problem]:
        yield from super().problems()
        if len(self.name) > MAX_DEPLOYMENT_NAME:
            yield ("metadata", "name"), (f"at most {MAX_DEPLOYMENT_NAME} characters for a "
                                         "Deployment (its pods' names add 17)")
        spec = self.spec
        yield from _label_problems(("spec", "selector", "matchLabels"),
                                   spec.selector.match_labels)
        template = ("spec", "template", "metadata")
        yield from _label_problems((*template, "labels"), spec.template.metadata.labels)
        yield from _label_problems((*template, "annotations"),
                                   spec.template.metadata.annotations, False)
        labels = spec.template.metadata.labels
        if any(labels.get(k) != v for k, v in spec.selector.match_labels.items()):
            wanted = ",".join(f"{k}={v}" for k, v in spec.selector.match_labels.items())
            yield (*template, "labels"), f"do not match spec.selector.matchLabels ({wanted})"
        rolling = spec.strategy.rolling_update
        if rolling.max_surge in (0, "0%") and rolling.max_unavailable in (0, "0%"):
            yield (("spec", "strategy", "rollingUpdate", "maxUnavailable"),
                   "must not be 0 when maxSurge is 0")
        for i, container in enumerate(self.containers):
            loc: Loc = ("spec", "template", "spec", "containers", i)
            if i > 0:  # said, not ignored: a pod would run without it
                yield loc, ("meshlet runs one container per pod: run this one as a "
                            "Deployment of its own")
            yield from container.problems(loc)


# --- Service ------------------------------------------------------------------------------

class ServicePort(KubeModel):
    port: Port
    target_port: PortOrName | None = None
    protocol: Literal["TCP"] = "TCP"
    name: str | None = None
    node_port: int | None = Field(default=None, ge=30000, le=32767)

    @property
    def target(self) -> int | str:
        """``targetPort``, which defaults to ``port``."""
        return self.port if self.target_port is None else self.target_port


class ServiceSpec(KubeModel):
    selector: dict[str, str] = Field(min_length=1)
    ports: list[ServicePort] = Field(min_length=1)
    type: Literal["ClusterIP", "NodePort", "LoadBalancer"] = "ClusterIP"
    session_affinity: Annotated[Literal["None"], Field(exclude=True)] = "None"


class Service(KubeObjectBase):
    api_version: Literal["v1"]
    kind: Literal["Service"]
    spec: ServiceSpec
    resource = "service"
    name_rule = "dns1035"

    def selects(self, deployment: Deployment) -> bool:
        """Whether this Service's selector picks the Deployment's pods."""
        labels = deployment.spec.template.metadata.labels
        return deployment.namespace == self.namespace and all(
            labels.get(k) == v for k, v in self.spec.selector.items())

    def problems(self) -> Iterator[Problem]:
        yield from super().problems()
        yield from _label_problems(("spec", "selector"), self.spec.selector)
        ports = self.spec.ports
        numbers: dict[int, int] = {}
        names: dict[str, int] = {}
        for i, port in enumerate(ports):
            loc: Loc = ("spec", "ports", i)
            if numbers.setdefault(port.port, i) != i:
                yield (*loc, "port"), f"duplicate port {port.port}"
            if port.name is None:
                if len(ports) > 1:
                    yield (*loc, "name"), "required when a Service has more than one port"
            elif not is_dns1123_label(port.name):
                yield (*loc, "name"), f"{port.name!r} is not a valid port name"
            elif names.setdefault(port.name, i) != i:
                yield (*loc, "name"), f"duplicate port name {port.name!r}"
            if port.node_port is not None and self.spec.type == "ClusterIP":
                yield (*loc, "nodePort"), "only a NodePort or LoadBalancer Service has one"


# --- HorizontalPodAutoscaler --------------------------------------------------------------

class ScaleTargetRef(KubeModel):
    api_version: Literal["apps/v1"] = "apps/v1"
    kind: Literal["Deployment"]
    name: str


class MetricTarget(KubeModel):
    type: Literal["Utilization", "AverageValue"]
    average_utilization: Positive | None = None
    average_value: float | None = None

    @field_validator("average_value", mode="before")
    @classmethod
    def _quantity(cls, value: Any) -> Any:
        return None if value is None else parse_quantity(value)


class ResourceMetricSource(KubeModel):
    name: Literal["cpu"]
    target: MetricTarget


class MetricIdentifier(KubeModel):
    # The two per-pod measures meshlet's sidecars export and the autoscaler reads.
    name: Literal["requests_per_second", "p95_latency_seconds"]


class PodsMetricSource(KubeModel):
    metric: MetricIdentifier
    target: MetricTarget


class MetricSpec(KubeModel):
    type: Literal["Resource", "Pods"]
    resource: ResourceMetricSource | None = None
    pods: PodsMetricSource | None = None


class ScalingRules(KubeModel):
    stabilization_window_seconds: int = Field(default=300, ge=0, le=3600)


class Behavior(KubeModel):
    scale_down: ScalingRules = ScalingRules()


class HPASpec(KubeModel):
    scale_target_ref: ScaleTargetRef
    min_replicas: int = Field(default=1, ge=1, le=MAX_REPLICAS)
    max_replicas: int = Field(ge=1, le=MAX_REPLICAS)
    metrics: list[MetricSpec] = []
    behavior: Behavior = Behavior()


class HorizontalPodAutoscaler(KubeObjectBase):
    api_version: Literal["autoscaling/v2"]
    kind: Literal["HorizontalPodAutoscaler"]
    spec: HPASpec
    resource = "horizontalpodautoscaler.autoscaling"

    def problems(self) -> Iterator[Problem]:
        yield from super().problems()
        spec = self.spec
        if not is_dns1123_subdomain(spec.scale_target_ref.name):
            yield (("spec", "scaleTargetRef", "name"),
                   f"{spec.scale_target_ref.name!r} is not a valid Deployment name")
        if spec.min_replicas > spec.max_replicas:
            yield ("spec", "maxReplicas"), f"must be at least minReplicas ({spec.min_replicas})"
        for i, metric in enumerate(spec.metrics):
            yield from _metric_problems(("spec", "metrics", i), metric)


def _metric_problems(loc: Loc, metric: MetricSpec) -> Iterator[Problem]:
    member = "resource" if metric.type == "Resource" else "pods"
    other = "pods" if member == "resource" else "resource"
    source = metric.resource if member == "resource" else metric.pods
    if getattr(metric, other) is not None:
        yield (*loc, other), f"not allowed with type {metric.type} (give {member})"
    if source is None:
        yield (*loc, member), f"required with type {metric.type}"
        return
    target = source.target
    wanted = "Utilization" if member == "resource" else "AverageValue"
    at = (*loc, member, "target")
    if target.type != wanted:
        yield (*at, "type"), f"must be {wanted} for a {metric.type} metric"
    elif wanted == "Utilization" and target.average_utilization is None:
        yield (*at, "averageUtilization"), "required with type Utilization"
    elif wanted == "AverageValue" and not target.average_value:
        yield (*at, "averageValue"), "required with type AverageValue, more than 0"
    if target.average_value is not None and wanted == "Utilization":
        yield (*at, "averageValue"), "not allowed with type Utilization"
    if target.average_utilization is not None and wanted == "AverageValue":
        yield (*at, "averageUtilization"), "not allowed with type AverageValue"


KubeObject = Namespace | Deployment | Service | HorizontalPodAutoscaler
KINDS: dict[str, tuple[str, type[KubeObjectBase]]] = {
    "Namespace": ("v1", Namespace),
    "Deployment": ("apps/v1", Deployment),
    "Service": ("v1", Service),
    "HorizontalPodAutoscaler": ("autoscaling/v2", HorizontalPodAutoscaler),
}


# --- for the server, the controller and the agent ------------------------------------------

def dotted(loc: Loc) -> str:
    """``spec.template.spec.containers[0].name``, as Kubernetes writes field paths."""
    text = ""
    for part in loc:
        text += f"[{part}]" if isinstance(part, int) else f".{part}" if text else str(part)
    return text


def error_message(error: Any) -> str:
    """One pydantic error as Kubernetes would word it."""
    kind = error["type"]
    if kind == "extra_forbidden":
        return "unknown field"
    if kind == "missing":
        return "required field"
    message = str(error["msg"]).removeprefix("Value error, ")
    return message.replace("Input should be", "must be")


def object_label(data: Any) -> str:
    """`` (in Deployment web)``: which object an error is about, as far as ``data`` says."""
    data = data if isinstance(data, dict) else {}
    kind = data.get("kind") if isinstance(data.get("kind"), str) else None
    meta = data.get("metadata")
    name = meta.get("name") if isinstance(meta, dict) else None
    if kind and isinstance(name, str):
        return f" (in {kind} {name})"
    return f" (in {kind})" if kind else f" (in {name})" if isinstance(name, str) else ""


def header_problem(data: dict[str, Any]) -> Problem | None:
    """What is wrong with ``kind`` and ``apiVersion`` (None: a known pair)."""
    kind = data.get("kind")
    if "kind" not in data:
        return ("kind",), "required field"
    if not isinstance(kind, str) or kind not in KINDS:
        return ("kind",), f"unknown kind {kind!r} (known: {', '.join(sorted(KINDS))})"
    api_version = KINDS[kind][0]
    if data.get("apiVersion") != api_version:
        return ("apiVersion",), f"{kind} is {api_version}, not {data.get('apiVersion')!r}"
    return None


def validate_object(data: Any) -> KubeObject:
    """``data`` (a canonical dict, or any manifest) as a validated object: the check the
    server makes of what a client sends. Raises ConfigError whose message and ``field``
    name the path: ``spec.replicas: must be ... (in Deployment web)``."""
    def fail(loc: Loc, message: str) -> ConfigError:
        path = dotted(loc) or "manifest"
        return ConfigError(f"{path}: {message}{object_label(data)}", path)

    if not isinstance(data, dict) or not all(isinstance(k, str) for k in data):
        raise fail((), "expected a Kubernetes object (a mapping with apiVersion and kind)")
    problem = header_problem(data)
    if problem is not None:
        raise fail(*problem)
    model = KINDS[data["kind"]][1]
    try:
        obj = model.model_validate(data)
    except ValidationError as exc:
        first = exc.errors(include_url=False)[0]
        raise fail(tuple(first["loc"]), error_message(first)) from None
    for loc, message in obj.problems():
        raise fail(loc, message)
    return obj  # type: ignore[return-value]


def template_hash(deployment: Deployment) -> str:
    """Ten hex digits of the canonical pod template: equal templates, equal hashes. It
    names a template's pods and revision, as Kubernetes' ``pod-template-hash`` does."""
    template = deployment.canonical()["spec"]["template"]
    text = json.dumps(template, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:10]


def _probe_spec(container: Container, probe: Probe | None) -> dict[str, Any] | None:
    if probe is None:
        return None
    port = container.port_number(probe.port)
    assert port is not None, "problems() requires a probe's named port to exist"
    return {"http": probe.http_get.path if probe.http_get is not None else None,
            "tcp": probe.tcp_socket is not None, "port": port,
            "period": float(probe.period_seconds), "timeout": float(probe.timeout_seconds),
            "initial_delay": float(probe.initial_delay_seconds),
            "failure_threshold": probe.failure_threshold,
            "success_threshold": probe.success_threshold}


def container_spec(deployment: Deployment) -> dict[str, Any]:
    """The first container of the pod template as a pod record holds it: probes with
    their port numbers and Kubernetes' defaults (period 10 s, timeout 1 s, 3 failures,
    1 success), ``port`` the first container port (None: none), ``memory`` in bytes
    and ``cpus`` a float (0: no limit). A later env entry of the same name wins, as in
    Kubernetes."""
    container = deployment.containers[0]
    limits = container.resources.limits
    return {"name": container.name, "image": container.image,
            "command": list(container.command), "args": list(container.args),
            "env": {e.name: e.value for e in container.env},
            "port": container.ports[0].container_port if container.ports else None,
            "readiness": _probe_spec(container, container.readiness_probe),
            "liveness": _probe_spec(container, container.liveness_probe),
            "memory": limits.memory or 0, "cpus": limits.cpu or 0.0,
            "protocol": "http"}

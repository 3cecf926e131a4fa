"""The pods table: the replicas of Deployments, each placed on one node by the
controller and run there by that node's agent. Pure.

Who writes what: the controller creates pods (``PodCreate``, for a Deployment that
exists), asks for one to stop (``PodTerminate``: phase ``terminating``) and may delete
any; the agent of the pod's node reports what it sees (``PodReport``) and, once it has
stopped a terminating pod, deletes it (``PodDelete`` with its node). A report or a
delete that names a node is refused unless the pod is placed on that node, so an agent
can change only its own. A terminating pod stays terminating whatever its agent
reports: only deleting it ends it.

``index`` counts every change; ``node_index`` the changes on each node's pods, so an
agent's blocking query wakes only for its own.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from meshlet.errors import ConfigError, Conflict, NotFound
from meshlet.kube_objects import (
    MAX_ARG_TEXT,
    MAX_ARGS,
    MAX_ENV_NAME,
    is_dns1123_label,
    is_dns1123_subdomain,
)
from meshlet.settings_rules import PROTOCOLS
from meshlet.state.commands import PodCreate, PodDelete, PodReport, PodTerminate
from meshlet.state.networks import OWNER_NAME
from meshlet.state.objects import ObjectTable, non_negative

MAX_PODS = 10_000
MAX_TEXT = MAX_ARG_TEXT
PHASES = ("pending", "running", "failed", "terminating")
CONTAINER_KEYS = {"name", "image", "command", "args", "env", "port", "readiness",
                  "liveness", "memory", "cpus", "protocol"}
PROBE_KEYS = {"http", "tcp", "port", "period", "timeout", "initial_delay",
              "failure_threshold", "success_threshold"}


def _text(value: object, at: str, limit: int = MAX_TEXT) -> str:
    if not isinstance(value, str) or len(value) > limit or "\0" in value:
        raise ConfigError(f"{at}: text of at most {limit} characters", at)
    return value


def _count(value: object, at: str, low: int = 0) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value < 2 ** 31:
        raise ConfigError(f"{at}: a whole number, {low} or more", at)
    return value


def _port(value: object, at: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 < value < 65536:
        raise ConfigError(f"{at}: a port, 1..65535", at)
    return value


def _check_probe(probe: object, at: str) -> None:
    if probe is None:
        return
    if not isinstance(probe, dict) or set(probe) != PROBE_KEYS:
        raise ConfigError(f"{at}: expected {{{', '.join(sorted(PROBE_KEYS))}}}", at)
    if probe["http"] is not None:
        _text(probe["http"], f"{at}.http")
    if not isinstance(probe["tcp"], bool) or probe["tcp"] == (probe["http"] is not None):
        raise ConfigError(f"{at}: an http path or tcp, one of them", at)
    _port(probe["port"], f"{at}.port")
    for name in ("period", "timeout", "initial_delay"):
        non_negative(probe[name], f"{at}.{name}")
    for name in ("failure_threshold", "success_threshold"):
        _count(probe[name], f"{at}.{name}", 1)


METRIC_NAMES = ("cpu", "requests_per_second", "p95_latency_seconds")


def check_metrics(metrics: object) -> None:
    """A pod's measures: the autoscaler's metric names to a number or None."""
    if not isinstance(metrics, dict) or not set(metrics) <= set(METRIC_NAMES):
        raise ConfigError(f"metrics: an object of {', '.join(METRIC_NAMES)}", "metrics")
    for name, value in metrics.items():
        if value is not None:
            non_negative(value, f"metrics.{name}")


def check_container(container: object) -> None:
    """``container`` has the shape ``kube_objects.container_spec`` gives; raises
    ConfigError naming the field."""
    at = "container"
    if not isinstance(container, dict) or set(container) != CONTAINER_KEYS:
        raise ConfigError(f"{at}: expected {{{', '.join(sorted(CONTAINER_KEYS))}}}", at)
    _text(container["name"], f"{at}.name", 63)
    if not container["image"] or not isinstance(container["image"], str):
        raise ConfigError(f"{at}.image: an image reference", f"{at}.image")
    _text(container["image"], f"{at}.image", 255)
    for name in ("command", "args"):
        args = container[name]
        if not isinstance(args, list) or len(args) > MAX_ARGS:
            raise ConfigError(f"{at}.{name}: a list of at most {MAX_ARGS} strings",
                              f"{at}.{name}")
        for i, arg in enumerate(args):
            _text(arg, f"{at}.{name}[{i}]")
    env = container["env"]
    if not isinstance(env, dict) or len(env) > MAX_ARGS:
        raise ConfigError(f"{at}.env: an object of names to values", f"{at}.env")
    for key, value in env.items():
        _text(key, f"{at}.env", MAX_ENV_NAME)
        _text(value, f"{at}.env.{key}")
    if container["port"] is not None:
        _port(container["port"], f"{at}.port")
    if container["protocol"] not in PROTOCOLS:
        raise ConfigError(f"{at}.protocol: one of {', '.join(PROTOCOLS)}", f"{at}.protocol")
    _check_probe(container["readiness"], f"{at}.readiness")
    _check_probe(container["liveness"], f"{at}.liveness")
    memory = container["memory"]
    if isinstance(memory, bool) or not isinstance(memory, int) or not 0 <= memory <= 2 ** 60:
        raise ConfigError(f"{at}.memory: bytes, 0 for no limit", f"{at}.memory")
    non_negative(container["cpus"], f"{at}.cpus")


@dataclass
class Pod:
    name: str
    namespace: str
    deployment: str
    revision: int
    template_hash: str
    node: str
    service: str
    container: dict[str, Any]
    create_index: int
    modify_index: int
    phase: str = "pending"
    ready: bool = False
    restarts: int = 0
    detail: str = ""
    address: str = ""     # host:port of its sidecar's inbound listener, once running
    created: float = 0.0  # seconds since the epoch; 0: not known
    pid: int | None = None  # the app's process on its node, while it runs
    metrics: dict[str, float | None] = field(default_factory=dict)  # its last measures

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Pod:
        return cls(**d)


class PodTable:
    def __init__(self, objects: ObjectTable) -> None:
        self.objects = objects
        self.pods: dict[str, Pod] = {}
        self.index = 0
        self.node_index: dict[str, int] = {}

    def __repr__(self) -> str:
        return f"<PodTable {len(self.pods)} pods index={self.index}>"

    def get(self, name: str) -> Pod:
        found = self.pods.get(name)
        if found is None:
            raise NotFound(f"pod {name!r} not found", "name")
        return found

    def select(self, node: str | None = None, namespace: str | None = None,
               deployment: str | None = None) -> list[Pod]:
        """Pods by name, of ``node``, ``namespace`` and ``deployment`` where given."""
        return [p for _, p in sorted(self.pods.items())
                if (node is None or p.node == node)
                and (namespace is None or p.namespace == namespace)
                and (deployment is None or p.deployment == deployment)]

    def _touch(self, index: int, pod: Pod) -> None:
        self.index = index
        self.node_index[pod.node] = index

    def _on_node(self, pod: Pod, node: str) -> None:
        if node and pod.node != node:
            raise NotFound(f"pod {pod.name!r} is not on node {node!r}", "name")

    # -- checks ---------------------------------------------------------------------------

    def check_create(self, cmd: PodCreate) -> None:
        if not isinstance(cmd.name, str) or not is_dns1123_subdomain(cmd.name):
            raise ConfigError(f"name: {cmd.name!r} is not a valid pod name", "name")
        if not isinstance(cmd.namespace, str) or not is_dns1123_label(cmd.namespace):
            raise ConfigError(f"namespace: {cmd.namespace!r} is not a namespace",
                              "namespace")
        if not isinstance(cmd.node, str) or not OWNER_NAME.match(cmd.node):
            raise ConfigError(f"node: {cmd.node!r} is not a valid node name", "node")
        if not isinstance(cmd.service, str) or (cmd.service
                                                and not is_dns1123_label(cmd.service)):
            raise ConfigError(f"service: {cmd.service!r} is not a service name", "service")
        _count(cmd.revision, "revision", 1)
        if not isinstance(cmd.template_hash, str) or not 1 <= len(cmd.template_hash) <= 64 \
                or not cmd.template_hash.isalnum():
            raise ConfigError("template_hash: letters and digits, at most 64",
                              "template_hash")
        check_container(cmd.container)
        non_negative(cmd.created, "created")
        if not isinstance(cmd.deployment, str):
            raise ConfigError("deployment: a Deployment's name", "deployment")
        self.objects.get("Deployment", cmd.namespace, cmd.deployment)
        if cmd.name in self.pods:
            raise Conflict(f"pod {cmd.name!r} already exists", "name")
        if len(self.pods) >= MAX_PODS:
            raise Conflict(f"the store holds {MAX_PODS} pods, its most", "name")

    def check_delete(self, cmd: PodDelete) -> None:
        pod = self.get(cmd.name)
        self._on_node(pod, cmd.node)
        if cmd.node and pod.phase != "terminating":
            raise Conflict(f"pod {cmd.name!r} is {pod.phase}, not terminating: its agent "
                           "deletes it only once asked to stop it", "name")

    def check_terminate(self, cmd: PodTerminate) -> None:
        self.get(cmd.name)

    def check_report(self, cmd: PodReport) -> None:
        pod = self.get(cmd.name)
        self._on_node(pod, cmd.node)
        if cmd.phase not in PHASES:
            raise ConfigError(f"phase: {cmd.phase!r} is not one of {', '.join(PHASES)}",
                              "phase")
        if not isinstance(cmd.ready, bool):
            raise ConfigError("ready: true or false", "ready")
        _count(cmd.restarts, "restarts")
        _text(cmd.detail, "detail")
        _text(cmd.address, "address", 255)
        if cmd.pid is not None and (isinstance(cmd.pid, bool) or not isinstance(cmd.pid, int)
                                    or not 0 < cmd.pid < 2 ** 31):
            raise ConfigError("pid: a process id", "pid")
        check_metrics(cmd.metrics)

    # -- apply ----------------------------------------------------------------------------

    def create(self, index: int, cmd: PodCreate) -> dict[str, Any]:
        pod = Pod(cmd.name, cmd.namespace, cmd.deployment, cmd.revision, cmd.template_hash,
                  cmd.node, cmd.service, dict(cmd.container), index, index,
                  created=float(cmd.created))
        self.pods[cmd.name] = pod
        self._touch(index, pod)
        return pod.to_dict()

    def delete(self, index: int, cmd: PodDelete) -> dict[str, Any]:
        pod = self.pods.pop(cmd.name)
        self._touch(index, pod)
        return {"deleted": pod.name}

    def terminate(self, index: int, cmd: PodTerminate) -> dict[str, Any]:
        pod = self.pods[cmd.name]
        if pod.phase != "terminating":
            pod.phase, pod.ready, pod.modify_index = "terminating", False, index
            self._touch(index, pod)
        return pod.to_dict()

    def report(self, index: int, cmd: PodReport) -> dict[str, Any]:
        pod = self.pods[cmd.name]
        phase = "terminating" if pod.phase == "terminating" else cmd.phase
        ready = cmd.ready and phase == "running"
        new = (phase, ready, cmd.restarts, cmd.detail, cmd.address, cmd.pid,
               dict(cmd.metrics))
        if new != (pod.phase, pod.ready, pod.restarts, pod.detail, pod.address, pod.pid,
                   pod.metrics):
            (pod.phase, pod.ready, pod.restarts, pod.detail, pod.address, pod.pid,
             pod.metrics) = new
            pod.modify_index = index
            self._touch(index, pod)
        return pod.to_dict()

    # -- snapshots ------------------------------------------------------------------------

    def dump(self) -> dict[str, Any]:
        return {"index": self.index, "node_index": dict(sorted(self.node_index.items())),
                "pods": [self.pods[k].to_dict() for k in sorted(self.pods)]}

    def load(self, body: dict[str, Any] | None) -> None:
        body = body or {"index": 0, "node_index": {}, "pods": []}
        self.index = body["index"]
        self.node_index = dict(body["node_index"])
        self.pods = {d["name"]: Pod.from_dict(d) for d in body["pods"]}

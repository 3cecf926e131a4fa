"""The autoscaler's driver against a real state machine: it averages what the ready
pods reported, scales the Deployment, writes the HPA's status and a SuccessfulRescale
event, counts the decision, and waits out the scale-down window."""

from __future__ import annotations

from typing import Any

from prometheus_client import CollectorRegistry

from meshlet.deploy.autoscaler import average_measures, decide, replica_measures, status_of
from meshlet.kube_objects import Deployment, container_spec, template_hash
from meshlet.observe.samples import Window
from meshlet.server.autoscaling import Autoscaler
from meshlet.state.commands import Command, ObjectApply, PodCreate, PodReport
from tests.unit.test_autoscaler import RPS, hpa
from tests.unit.test_networks import Machine
from tests.unit.test_objects_state import deployment, manifests


class Node:
    """What the driver needs of a Raft node: the state and a way to propose."""

    def __init__(self) -> None:
        self.m = Machine()
        self.machine = self.m.sm

    async def propose(self, command: Command) -> Any:
        return self.m.apply(command)


def web_with_pods(node: Node, count: int) -> list[str]:
    node.m.apply(ObjectApply(deployment()))
    web = Deployment.model_validate(manifests()[0])
    names = []
    for i in range(count):
        name = f"web-{template_hash(web)}-pod{i}x"
        node.m.apply(PodCreate(name, "default", "web", 1, template_hash(web), f"n{i}",
                               container_spec(web), service="web"))
        names.append(name)
    return names


def report(node: Node, names: list[str], rps: float | None, ready: bool = True) -> None:
    for i, name in enumerate(names):
        node.m.apply(PodReport(name, "running", ready, 0, "", f"10.0.0.{i}:21000",
                               metrics={"requests_per_second": rps, "cpu": None,
                                        "p95_latency_seconds": None}))


def replicas(node: Node) -> int:
    return int(node.machine.objects.get("Deployment", "default", "web")
               .manifest["spec"]["replicas"])


def decisions(registry: CollectorRegistry, direction: str) -> float:
    return registry.get_sample_value("meshlet_autoscaler_decisions_total",
                                     {"direction": direction}) or 0.0


async def test_scales_up_at_once_and_down_after_the_window() -> None:
    node, registry = Node(), CollectorRegistry()
    pods = web_with_pods(node, 3)
    node.m.apply(ObjectApply(hpa(RPS, high=5, window=30).canonical()))
    scaler = Autoscaler(node, registry)  # type: ignore[arg-type]

    report(node, pods, 150.0)          # ceil(3 * 150 / 100) = 5
    await scaler.sync(now=0.0)
    assert replicas(node) == 5
    record = node.machine.objects.get("HorizontalPodAutoscaler", "default", "web")
    assert (record.status["currentReplicas"], record.status["desiredReplicas"]) == (3, 5)
    assert record.status["currentMetrics"] == [{"name": "requests_per_second",
                                                "current": "150"}]
    assert [(e["reason"], e["message"]) for e in record.events] == [
        ("SuccessfulRescale",
         "New size: 5; reason: pods metric requests_per_second above target")]
    assert decisions(registry, "up") == 1

    report(node, pods, 20.0)           # would be ceil(5 * 0.2) = 1, but the window holds
    await scaler.sync(now=10.0)
    assert replicas(node) == 5 and decisions(registry, "down") == 0
    await scaler.sync(now=25.0)
    assert replicas(node) == 5
    await scaler.sync(now=41.0)        # the recommendation of 5 at t=0 has left the window
    assert replicas(node) == 1 and decisions(registry, "down") == 1
    events = node.machine.objects.get("HorizontalPodAutoscaler", "default", "web").events
    assert events[-1]["message"] == "New size: 1; reason: All metrics below target"


async def test_unready_pods_and_missing_measures_change_nothing() -> None:
    node, registry = Node(), CollectorRegistry()
    pods = web_with_pods(node, 3)
    node.m.apply(ObjectApply(hpa(RPS, high=5).canonical()))
    scaler = Autoscaler(node, registry)  # type: ignore[arg-type]
    report(node, pods, 500.0, ready=False)   # not ready: not counted
    await scaler.sync(now=0.0)
    report(node, pods, None)                 # ready, but nothing measured yet
    await scaler.sync(now=5.0)
    assert replicas(node) == 3 and decisions(registry, "up") == 0
    status = node.machine.objects.get("HorizontalPodAutoscaler", "default", "web").status
    active = next(c for c in status["conditions"] if c["type"] == "ScalingActive")
    assert active["status"] == "False" and "no value for requests_per_second" in \
        active["message"]
    assert status["currentMetrics"] == [{"name": "requests_per_second", "current": None}]


def test_a_replicas_measures_from_one_window() -> None:
    # 50 requests in 5 s, all within 0.1 s; 0.5 CPU s of a 0.5-core limit: 20 %.
    w = Window(0.0, 5.0, 50.0, 0.0, ((0.1, 50.0), (float("inf"), 50.0)), 2.0, 50.0)
    got = replica_measures(w, 0.5, 0.5)
    assert got["requests_per_second"] == 10.0 and got["cpu"] == 20.0
    assert got["p95_latency_seconds"] is not None and 0 < got["p95_latency_seconds"] <= 0.1
    idle = Window(0.0, 5.0, 0.0, 0.0, ((0.1, 0.0), (float("inf"), 0.0)), 0.0, 0.0)
    assert replica_measures(idle, None, None) == {
        "requests_per_second": 0.0, "p95_latency_seconds": None, "cpu": None}
    assert replica_measures(idle, 1.0, None)["cpu"] == 20.0   # of one core: no limit
    assert replica_measures(idle, -1.0, None)["cpu"] == 0.0   # its CPU time restarted
    # Counters that say NaN or +Inf are no measure (the state refuses them in a report).
    broken = Window(0.0, 5.0, float("nan"), 0.0, ((float("inf"), float("inf")),), 0.0,
                    float("inf"))
    assert replica_measures(broken, float("inf"), None) == {
        "requests_per_second": None, "p95_latency_seconds": None, "cpu": None}


def test_the_average_skips_replicas_without_a_value() -> None:
    got = average_measures([{"requests_per_second": 10.0, "p95_latency_seconds": None},
                            {"requests_per_second": 30.0, "p95_latency_seconds": 0.2}])
    assert got == {"cpu": None, "requests_per_second": 20.0, "p95_latency_seconds": 0.2}
    assert average_measures([]) == {"cpu": None, "requests_per_second": None,
                                    "p95_latency_seconds": None}


def test_status_keeps_the_last_scale_time_when_nothing_changes() -> None:
    steady = decide(hpa(RPS), 3, {"requests_per_second": 100.0}, (), now=0.0)
    status = status_of(steady, {"lastScaleTime": 12.0}, now=99.0)
    assert status["lastScaleTime"] == 12.0 and status["desiredReplicas"] == 3

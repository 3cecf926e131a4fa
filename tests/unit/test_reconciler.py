"""The deployment controller's decisions, against a small simulated world: pods the
plan creates start pending and become ready a few passes later; pods it removes
terminate and are gone the pass after."""

from __future__ import annotations

import itertools
from dataclasses import replace

import pytest

from meshlet.deploy.placement import NodeView, Placed, choose_node
from meshlet.deploy.reconciler import (
    CRASH_RESTARTS,
    DeploymentView,
    PodView,
    reconcile,
    resolve_bounds,
)

NODES = [NodeView("n1", "a"), NodeView("n2", "b"), NodeView("n3", "c")]


class World:
    """Pods as agents would run them, the controller's last statuses, and a clock."""

    def __init__(self, nodes: list[NodeView], ready_after: int = 2) -> None:
        self.nodes = nodes
        self.pods: dict[str, PodView] = {}
        self.age: dict[str, int] = {}
        self.status: dict[tuple[str, str], dict[str, object]] = {}
        self.ready_after = ready_after
        self.never_ready: set[str] = set()   # template hashes whose pods never get ready
        self.now = 1000.0
        self.names = itertools.count()

    def step(self, d: DeploymentView) -> list[str]:
        d = replace(d, status=self.status.get(d.key, {}))
        plan = reconcile([d], list(self.pods.values()), self.nodes, self.now)
        self.status.update(plan.statuses)
        for name in [n for n, p in self.pods.items() if p.phase == "terminating"]:
            del self.pods[name]
        for delete in plan.deletes:
            self.pods[delete.pod] = replace(self.pods[delete.pod], phase="terminating",
                                            ready=False)
        for create in plan.creates:
            name = f"{create.deployment}-{create.template_hash}-{next(self.names)}"
            self.pods[name] = PodView(name, create.namespace, create.deployment,
                                      create.template_hash, create.node, created=self.now)
            self.age[name] = 0
        for name, pod in list(self.pods.items()):
            if pod.phase in ("pending", "running"):
                self.age[name] += 1
                ready = (self.age[name] >= self.ready_after
                         and pod.template_hash not in self.never_ready)
                self.pods[name] = replace(pod, phase="running", ready=ready)
        self.now += 1.0
        return [e[3] for e in plan.events]

    def live(self, template_hash: str | None = None) -> list[PodView]:
        return [p for p in self.pods.values() if p.phase != "terminating"
                and (template_hash is None or p.template_hash == template_hash)]

    def converge(self, d: DeploymentView, steps: int = 60) -> None:
        for _ in range(steps):
            self.step(d)
        assert len(self.live(d.template_hash)) == d.replicas
        assert all(p.ready for p in self.live())


def web(replicas: int = 3, template_hash: str = "aaa", **kw: object) -> DeploymentView:
    return DeploymentView("default", "web", 1, replicas, template_hash, **kw)  # type: ignore[arg-type]


def test_three_replicas_are_spread_one_per_node_and_across_zones() -> None:
    world = World(NODES)
    world.converge(web())
    assert sorted(p.node for p in world.live()) == ["n1", "n2", "n3"]
    status = world.status[("default", "web")]
    assert status["readyReplicas"] == 3 and status["updatedReplicas"] == 3


def test_zones_spread_before_nodes_within_a_zone() -> None:
    nodes = [NodeView("a1", "a"), NodeView("a2", "a"), NodeView("b1", "b")]
    world = World(nodes)
    world.converge(web(replicas=2))
    assert {p.node[0] for p in world.live()} == {"a", "b"}


def test_a_failed_pod_is_replaced() -> None:
    world = World(NODES)
    d = web()
    world.converge(d)
    victim = next(iter(world.pods))
    world.pods[victim] = replace(world.pods[victim], phase="failed", ready=False,
                                 detail="exited 137")
    world.converge(d)
    assert victim not in world.pods


def test_pods_of_a_node_that_left_are_placed_on_the_others() -> None:
    world = World(NODES)
    d = web()
    world.converge(d)
    world.nodes = NODES[:2]
    world.converge(d)
    assert sorted(p.node for p in world.live()) in (["n1", "n1", "n2"], ["n1", "n2", "n2"])


def test_scale_down_keeps_the_spread_and_removes_not_ready_first() -> None:
    world = World(NODES)
    world.converge(web(replicas=6))
    laggard = next(p for p in world.live() if p.node == "n1")
    world.pods[laggard.name] = replace(laggard, ready=False)
    world.step(web(replicas=3))
    assert world.pods[laggard.name].phase == "terminating"
    world.converge(web(replicas=3))
    assert sorted(p.node for p in world.live()) == ["n1", "n2", "n3"]


def test_pods_of_a_deleted_deployment_are_removed() -> None:
    world = World(NODES)
    world.converge(web())
    plan = reconcile([], list(world.pods.values()), NODES, world.now)
    assert len(plan.deletes) == 3 and not plan.creates


@pytest.mark.parametrize("replicas,surge,unavailable", [
    (3, "25%", "25%"), (3, 1, 0), (3, 0, 1), (4, "50%", "50%"), (5, 2, 1), (1, 1, 0)])
def test_a_rolling_update_keeps_within_its_bounds_and_completes(
        replicas: int, surge: int | str, unavailable: int | str) -> None:
    world = World(NODES * 2 if replicas > 3 else NODES)
    old = web(replicas, "old", max_surge=surge, max_unavailable=unavailable)
    world.converge(old)
    new = replace(old, template_hash="new", revision=2)
    max_surge, max_unavailable = resolve_bounds(new)
    for _ in range(80):
        world.step(new)
        live = world.live()
        assert len(live) <= replicas + max_surge
        assert sum(p.ready for p in live) >= replicas - max_unavailable
    assert len(world.live("new")) == replicas and not world.live("old")
    progressing = world.status[new.key]["conditions"][1]  # type: ignore[index]
    assert progressing["reason"] == "NewReplicaSetAvailable"


@pytest.mark.parametrize("surge,unavailable", [(1, 0), ("25%", "25%"), (0, 1), (2, 0)])
def test_a_rolling_update_ends_as_spread_as_it_began(surge: int | str,
                                                     unavailable: int | str) -> None:
    world = World(NODES)
    old = web(3, "old", max_surge=surge, max_unavailable=unavailable)
    world.converge(old)
    assert sorted(p.node for p in world.live()) == ["n1", "n2", "n3"]
    world.converge(replace(old, template_hash="new", revision=2), steps=80)
    assert sorted(p.node for p in world.live("new")) == ["n1", "n2", "n3"]


def test_a_rollout_whose_pods_never_get_ready_stops_at_its_deadline_keeping_the_old() -> None:
    world = World(NODES)
    old = web(progress_deadline=10.0)
    world.converge(old)
    new = replace(old, template_hash="bad", revision=2)
    world.never_ready.add("bad")
    events: list[str] = []
    for _ in range(40):
        events += world.step(new)
    assert len([p for p in world.live("aaa") if p.ready]) == 3  # none removed
    assert events.count("ProgressDeadlineExceeded") == 1
    progressing = world.status[new.key]["conditions"][1]  # type: ignore[index]
    assert progressing["status"] == "False"
    assert progressing["reason"] == "ProgressDeadlineExceeded"
    before = set(world.pods)
    world.step(new)
    assert set(world.pods) == before  # stopped: nothing more is created or removed


def test_a_crash_looping_new_pod_fails_the_rollout_at_once() -> None:
    world = World(NODES)
    old = web()
    world.converge(old)
    new = replace(old, template_hash="crash", revision=2)
    world.never_ready.add("crash")
    world.step(new)
    crashing = world.live("crash")[0]
    world.pods[crashing.name] = replace(crashing, restarts=CRASH_RESTARTS,
                                        detail="process exited with code 1")
    events = world.step(new)
    assert "ReplicaFailure" in events
    message = world.status[new.key]["conditions"][1]["message"]  # type: ignore[index]
    assert "restarted 3 times" in message and "exited with code 1" in message


def test_undo_to_the_old_template_ends_a_failed_rollout() -> None:
    world = World(NODES)
    old = web(progress_deadline=5.0)
    world.converge(old)
    world.never_ready.add("bad")
    for _ in range(20):
        world.step(replace(old, template_hash="bad", revision=2))
    world.converge(replace(old, revision=3))
    assert not world.live("bad")


def test_an_unschedulable_replica_says_why_as_the_scheduler_does() -> None:
    small = [NodeView("n1", cpu=1.0), NodeView("n2", cpu=1.0)]
    world = World(small)
    events = world.step(web(replicas=3, cpus=0.75))
    assert len(world.live()) == 2
    assert "FailedScheduling" in events
    node, why = choose_node(small, [Placed("n1", ("default", "web"), 0.75),
                                    Placed("n2", ("default", "web"), 0.75)],
                            ("default", "web"), 0.75)
    assert node is None and why == "0/2 nodes are available: 2 Insufficient cpu"


def test_the_same_inputs_give_the_same_plan() -> None:
    pods = [PodView("web-a-1", "default", "web", "a", "n1", "running", True)]
    first = reconcile([web()], pods, NODES, 5.0)
    assert first == reconcile([web()], pods, NODES, 5.0)


def test_bounds_resolve_as_kubernetes_rounds_them() -> None:
    assert resolve_bounds(web(10, max_surge="25%", max_unavailable="25%")) == (3, 2)
    assert resolve_bounds(web(1, max_surge="25%", max_unavailable="25%")) == (1, 0)
    assert resolve_bounds(web(3, max_surge=0, max_unavailable=0)) == (0, 1)

"""The deployment controller's decisions: desired and observed state in, actions out.
Pure: the leader's driver (``server/deployments.py``) reads the state, calls
``reconcile`` and proposes what it returns.

For each Deployment, as Kubernetes' deployment controller decides:

- Pods of a Deployment that is gone, failed pods, and pods on a node that left are
  removed; the replicas they leave missing are placed again (self-healing).
- With one template (no rollout), the count is brought to ``replicas``: new replicas
  go where ``placement`` says; a scale-down removes not-ready pods first, then those
  on the most crowded node, then the newest.
- On a template change (a new ``template_hash``) it rolls: the new template gets
  replicas while the total stays within ``replicas + maxSurge``, and an old pod is
  removed only while the ready pods stay at least ``replicas - maxUnavailable``
  (gated on readiness: a new pod that never becomes ready holds the rollout).
- A rollout fails when it made no progress for ``progressDeadlineSeconds`` or when a
  new pod restarted ``CRASH_RESTARTS`` times: it then stops (no new pods beyond those
  there, the old ones kept) and its Progressing condition says why.

Terminating pods are left alone and count as unavailable.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from meshlet.deploy.placement import NodeView, Placed, choose_node

CRASH_RESTARTS = 3   # a new pod restarted this often fails its rollout

__all__ = ["CRASH_RESTARTS", "Create", "Delete", "DeploymentView", "NodeView", "Plan",
           "PodView", "reconcile", "resolve_bounds"]


@dataclass(frozen=True)
class DeploymentView:
    namespace: str
    name: str
    generation: int
    replicas: int
    template_hash: str
    revision: int = 1
    max_surge: int | str = "25%"
    max_unavailable: int | str = "25%"
    progress_deadline: float = 600.0
    status: dict[str, Any] = field(default_factory=dict)   # as the last pass wrote it
    cpus: float = 0.0
    memory: int = 0

    @property
    def key(self) -> tuple[str, str]:
        return self.namespace, self.name


@dataclass(frozen=True)
class PodView:
    name: str
    namespace: str
    deployment: str
    template_hash: str
    node: str
    phase: str = "pending"
    ready: bool = False
    restarts: int = 0
    created: float = 0.0
    detail: str = ""
    cpus: float = 0.0
    memory: int = 0

    @property
    def owner(self) -> tuple[str, str]:
        return self.namespace, self.deployment


@dataclass(frozen=True)
class Create:
    namespace: str
    deployment: str
    template_hash: str
    node: str


@dataclass(frozen=True)
class Delete:
    pod: str
    reason: str


Event = tuple[str, str, str, str, str]   # namespace, name, type, reason, message


@dataclass
class Plan:
    creates: list[Create] = field(default_factory=list)
    deletes: list[Delete] = field(default_factory=list)
    statuses: dict[tuple[str, str], dict[str, Any]] = field(default_factory=dict)
    events: list[Event] = field(default_factory=list)

    @property
    def empty(self) -> bool:
        return not self.creates and not self.deletes


def _amount(value: int | str, replicas: int, round_up: bool) -> int:
    if isinstance(value, int):
        return value
    fraction = replicas * int(value.rstrip("%")) / 100
    return math.ceil(fraction) if round_up else math.floor(fraction)


def resolve_bounds(d: DeploymentView) -> tuple[int, int]:
    """(maxSurge, maxUnavailable) as numbers: a percentage of replicas, surge rounded
    up and unavailability down; both 0 would stall, so unavailability is then 1."""
    surge = _amount(d.max_surge, d.replicas, True)
    unavailable = _amount(d.max_unavailable, d.replicas, False)
    if surge == 0 and unavailable == 0:
        unavailable = 1
    return surge, unavailable


def removal_order(pods: Sequence[PodView]) -> list[PodView]:
    """Which to remove first: not ready, then on the most crowded node, then newest."""
    crowd = Counter(p.node for p in pods)
    return sorted(pods, key=lambda p: (p.ready, -crowd[p.node], -p.created, p.name))


class _Pass:
    """One reconcile: the plan grows as each Deployment is looked at."""

    def __init__(self, pods: Sequence[PodView], nodes: Sequence[NodeView], now: float) -> None:
        self.nodes = list(nodes)
        self.now = now
        self.plan = Plan()
        self.placed = [Placed(p.node, p.owner, p.cpus, p.memory, p.template_hash)
                       for p in pods if p.phase != "terminating"]

    def delete(self, pod: PodView, reason: str) -> None:
        self.plan.deletes.append(Delete(pod.name, reason))
        for i, placed in enumerate(self.placed):
            if (placed.node, placed.owner, placed.template) == (pod.node, pod.owner,
                                                               pod.template_hash):
                del self.placed[i]
                break

    def create(self, d: DeploymentView, count: int) -> tuple[int, str]:
        """Place up to ``count`` replicas; (how many were placed, why not the rest)."""
        made = 0
        for _ in range(count):
            node, why = choose_node(self.nodes, self.placed, d.key, d.cpus, d.memory,
                                    d.template_hash)
            if node is None:
                return made, why
            self.plan.creates.append(Create(d.namespace, d.name, d.template_hash, node))
            self.placed.append(Placed(node, d.key, d.cpus, d.memory, d.template_hash))
            made += 1
        return made, ""

    def event(self, d: DeploymentView, kind: str, reason: str, message: str) -> None:
        self.plan.events.append((d.namespace, d.name, kind, reason, message))


def reconcile(deployments: Sequence[DeploymentView], pods: Sequence[PodView],
              nodes: Sequence[NodeView], now: float) -> Plan:
    """What to do now so the pods become what the Deployments ask for."""
    run = _Pass(pods, nodes, now)
    alive = {n.name for n in nodes if n.alive}
    wanted = {d.key for d in deployments}
    for pod in pods:
        if pod.phase == "terminating":
            continue
        if pod.owner not in wanted:
            run.delete(pod, f"its Deployment {pod.deployment!r} is gone")
        elif pod.node not in alive:
            run.delete(pod, f"its node {pod.node!r} left the cluster")
        elif pod.phase == "failed":
            run.delete(pod, f"it failed: {pod.detail or 'no reason given'}")
    gone = {d.pod for d in run.plan.deletes}
    for d in sorted(deployments, key=lambda d: d.key):
        mine = [p for p in pods if p.owner == d.key and p.name not in gone]
        _deployment(run, d, mine)
    return run.plan


def _deployment(run: _Pass, d: DeploymentView, mine: list[PodView]) -> None:
    active = [p for p in mine if p.phase != "terminating"]
    new = [p for p in active if p.template_hash == d.template_hash]
    old = [p for p in active if p.template_hash != d.template_hash]
    surge, unavailable = resolve_bounds(d)
    previous = d.status
    rolling_to = previous.get("templateHash")
    progress_since = previous.get("progressSince")
    if rolling_to != d.template_hash or progress_since is None:
        progress_since = run.now   # a new rollout (or the first look) starts the clock
    failure = _failure(d, new, old, run.now, float(progress_since))
    set_name = f"{d.name}-{d.template_hash}"
    before = len(new)

    if not failure:
        if len(new) > d.replicas:              # scaled down: remove the surplus
            for pod in removal_order(new)[:len(new) - d.replicas]:
                run.delete(pod, "scaled down")
            new = [p for p in new if p.name not in {x.pod for x in run.plan.deletes}]
        room = d.replicas - len(new)
        if old:
            room = min(room, d.replicas + surge - len(active))
        if room > 0:
            made, why = run.create(d, room)
            if why:
                run.event(d, "Warning", "FailedScheduling", why)
            if made:
                run.event(d, "Normal", "ScalingReplicaSet",
                          f"Scaled up replica set {set_name} to {before + made}")
    if old and not failure:
        ready = sum(p.ready for p in active)
        floor = d.replicas - unavailable
        removed = 0
        for pod in removal_order(old):       # the not-ready first: they serve no one
            if pod.ready:
                if ready - 1 < floor:
                    break
                ready -= 1
            run.delete(pod, f"replaced by {set_name}")
            removed += 1
        if removed:
            run.event(d, "Normal", "ScalingReplicaSet",
                      f"Scaled down old replica sets of {d.name} by {removed}")

    updated = len(new)
    ready_new = sum(p.ready for p in new)
    ready_all = sum(p.ready for p in active)
    done = not old and updated == d.replicas and ready_new == d.replicas
    moved = (updated, ready_new) != (previous.get("updatedReplicas"),
                                     previous.get("updatedReadyReplicas"))
    if moved and not failure:
        progress_since = run.now
    conditions = [
        {"type": "Available",
         "status": "True" if ready_all >= d.replicas - unavailable else "False",
         "reason": "MinimumReplicasAvailable" if ready_all >= d.replicas - unavailable
         else "MinimumReplicasUnavailable",
         "message": f"{ready_all} of {d.replicas} replicas ready"},
        {"type": "Progressing", "status": "False" if failure else "True",
         "reason": failure[0] if failure else
         "NewReplicaSetAvailable" if done else "ReplicaSetUpdated",
         "message": failure[1] if failure else
         f"ReplicaSet {set_name} has successfully progressed" if done
         else f"ReplicaSet {set_name} is progressing"}]
    if failure and not _failed_before(previous):
        run.event(d, "Warning", failure[0], failure[1])
    run.plan.statuses[d.key] = {
        "observedGeneration": d.generation, "replicas": len(active),
        "updatedReplicas": updated, "updatedReadyReplicas": ready_new,
        "readyReplicas": ready_all, "availableReplicas": ready_all,
        "unavailableReplicas": max(0, d.replicas - ready_all),
        "templateHash": d.template_hash, "revision": d.revision,
        "progressSince": progress_since, "conditions": conditions}


def _failed_before(status: dict[str, Any]) -> bool:
    return any(c.get("type") == "Progressing" and c.get("status") == "False"
               for c in status.get("conditions", []))


def _failure(d: DeploymentView, new: list[PodView], old: list[PodView], now: float,
             since: float) -> tuple[str, str] | None:
    """Why the rollout to the new template failed, or None. Only a rollout can fail:
    with no old pods left there is nothing to stop at."""
    if not old:
        return None
    crashing = [p for p in new if p.restarts >= CRASH_RESTARTS]
    if crashing:
        pod = crashing[0]
        return ("ReplicaFailure", f"pod {pod.name} of ReplicaSet {d.name}-{d.template_hash} "
                                  f"restarted {pod.restarts} times: {pod.detail}".rstrip(": "))
    if now - since > d.progress_deadline:
        waiting = next((p for p in new if not p.ready), None)
        why = f": pod {waiting.name}: {waiting.detail}" if waiting and waiting.detail else ""
        return ("ProgressDeadlineExceeded",
                f"ReplicaSet {d.name}-{d.template_hash} has timed out progressing{why}")
    return None

"""The HorizontalPodAutoscaler controller: on the leader, every ``SYNC_PERIOD``.

For each HPA it averages the measures the target Deployment's ready pods reported
(their agents measure them, see ``agent/pod_meter.py``), asks the pure
``deploy/autoscaler.decide`` for the replica count, scales the Deployment when that
changes (``ObjectScale``, as ``meshlet scale`` does), and writes the HPA's status and a
``SuccessfulRescale`` event. Decisions are counted in
``meshlet_autoscaler_decisions_total{direction}``. The stabilisation window's history is
held here, in memory: a new leader starts it afresh, so its first scale-down waits out
a full window (it never scales down early).
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING, Any

from prometheus_client import CollectorRegistry, Counter

from meshlet.deploy.autoscaler import Recommendation, average_measures, decide, status_of
from meshlet.kube_objects import HorizontalPodAutoscaler, validate_object
from meshlet.state.commands import ObjectScale, ObjectStatus

if TYPE_CHECKING:
    from meshlet.server.raft_node import RaftServerNode

log = logging.getLogger(__name__)
SYNC_PERIOD = 5.0  # Kubernetes: 15 s; pods report every 5 s (agent/pod_meter.py)
Key = tuple[str, str]


class Autoscaler:
    def __init__(self, node: RaftServerNode, registry: CollectorRegistry | None = None
                 ) -> None:
        self.node = node
        self.history: dict[Key, tuple[Recommendation, ...]] = {}
        self.last_sync = 0.0
        self.decisions = Counter(
            "meshlet_autoscaler_decisions", "Autoscaler decisions that changed a "
            "Deployment's replicas, by direction.", ["direction"], registry=registry)

    def __repr__(self) -> str:
        return f"<Autoscaler {sorted(self.history)}>"

    def due(self, now: float) -> bool:
        if now - self.last_sync < SYNC_PERIOD:
            return False
        self.last_sync = now
        return True

    def forget(self) -> None:
        """Leadership lost: the next leader keeps its own history."""
        self.history.clear()
        self.last_sync = 0.0

    async def sync(self, now: float) -> None:
        machine = self.node.machine
        seen: set[Key] = set()
        for record in machine.objects.select("HorizontalPodAutoscaler"):
            hpa = validate_object(record.manifest)
            assert isinstance(hpa, HorizontalPodAutoscaler)
            key = (record.namespace, record.name)
            seen.add(key)
            await self.sync_one(key, hpa, record.status or {}, now)
        for gone in set(self.history) - seen:
            del self.history[gone]

    async def sync_one(self, key: Key, hpa: HorizontalPodAutoscaler,
                       previous: dict[str, Any], now: float) -> None:
        namespace, name = key
        target = hpa.spec.scale_target_ref.name
        deployments = {r.name: r for r in self.node.machine.objects.select(
            "Deployment", namespace)}
        if target not in deployments:
            return  # nothing to scale (yet): Kubernetes waits as well
        current = int(deployments[target].manifest["spec"]["replicas"])
        ready = [p.metrics for p in self.node.machine.pods.select(
            namespace=namespace, deployment=target) if p.ready and p.phase == "running"]
        decision = decide(hpa, current, average_measures(ready),
                          self.history.get(key, ()), now)
        self.history[key] = decision.history
        events: tuple[dict[str, Any], ...] = ()
        if decision.changed:
            log.info("autoscaler %s/%s: %s", namespace, name, decision.reason)
            await self.node.propose(ObjectScale("Deployment", namespace, target,
                                                decision.desired))
            self.decisions.labels("up" if decision.desired > decision.current
                                  else "down").inc()
            event = decision.event()
            events = ({"time": time.time(), **event},) if event else ()
        status = status_of(decision, previous, time.time())
        if decision.changed or _differs(status, previous):
            await self.node.propose(ObjectStatus("HorizontalPodAutoscaler", namespace,
                                                 name, status, events))


def _differs(status: dict[str, Any], previous: dict[str, Any]) -> bool:
    """Whether the status is worth a write (the time of the last scale aside)."""
    return {k: v for k, v in status.items() if k != "lastScaleTime"} != \
        {k: v for k, v in previous.items() if k != "lastScaleTime"}

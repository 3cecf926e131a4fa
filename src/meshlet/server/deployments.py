"""The deployment controller: on the leader, turns Deployments into pods on nodes.

Each pass reads the replicated state (Deployments, Services, pods, nodes), asks the
pure reconciler (``deploy/reconciler.py``) what to do and proposes it: pods to create
(named ``DEPLOYMENT-HASH-SUFFIX``, as Kubernetes names a ReplicaSet's pods), pods to
delete, and each Deployment's status and events. A pass runs when any of those tables
changes and at least every second (a rollout's deadline is a matter of time). Only
the leader acts; a new leader starts from the state, so nothing is lost with the old.
The autoscaler (``server/autoscaling.py``) runs in the same loop, every few seconds.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from collections.abc import Awaitable
from typing import TYPE_CHECKING, Any

from meshlet.deploy.pod_specs import PodPlanner
from meshlet.deploy.reconciler import reconcile
from meshlet.errors import ConfigError, Conflict, MeshletError, NotFound
from meshlet.server.autoscaling import Autoscaler
from meshlet.state.commands import ObjectStatus, PodCreate, PodDelete, PodTerminate

if TYPE_CHECKING:
    from prometheus_client import CollectorRegistry

    from meshlet.server.raft_node import RaftServerNode

log = logging.getLogger(__name__)
POLL = 0.1          # seconds between looks at the tables' indexes
MAX_IDLE = 1.0      # a pass at least this often
REPEAT_AFTER = 30.0  # an event repeated within this is not written again
SUFFIX_ALPHABET = "bcdfghjklmnpqrstvwxz2456789"  # Kubernetes' (no vowels: no words)


def pod_suffix() -> str:
    return "".join(secrets.choice(SUFFIX_ALPHABET) for _ in range(5))


class DeploymentController:
    def __init__(self, node: RaftServerNode, registry: CollectorRegistry | None = None
                 ) -> None:
        self.node = node
        self.autoscaler = Autoscaler(node, registry)
        self.seen: tuple[int, ...] = ()
        self.last_pass = 0.0
        self.statuses: dict[tuple[str, str], dict[str, Any]] = {}
        self.said: dict[tuple[str, str, str, str], float] = {}  # event -> when it was

    def __repr__(self) -> str:
        return f"<DeploymentController leader={self.node.is_leader}>"

    def indexes(self) -> tuple[int, ...]:
        machine = self.node.machine
        return machine.objects.index, machine.pods.index, machine.nodes.index

    async def run(self) -> None:
        while True:
            await asyncio.sleep(POLL)
            if not self.node.is_leader:
                self.statuses.clear()
                self.autoscaler.forget()
                continue
            now = time.monotonic()
            if self.autoscaler.due(now):
                await self.guarded(self.autoscaler.sync(now), "autoscaler")
            if self.indexes() == self.seen and now - self.last_pass < MAX_IDLE:
                continue
            self.seen, self.last_pass = self.indexes(), now
            await self.guarded(self.one_pass(), "deployment controller")

    @staticmethod
    async def guarded(work: Awaitable[None], what: str) -> None:
        try:
            await work
        except MeshletError as exc:  # leadership moved, or a proposal was refused
            log.warning("%s: %s", what, exc)
        except Exception:  # a bug must not end the controller: log it, try again
            log.exception("%s: pass failed", what)

    async def one_pass(self) -> None:
        planner = PodPlanner.from_machine(self.node.machine)
        plan = reconcile(planner.deployments(), planner.pods(), planner.nodes(), time.time())
        for create in plan.creates:
            fields = planner.pod(create, f"{create.deployment}-{create.template_hash}-"
                                         f"{pod_suffix()}")
            try:
                await self.node.propose(PodCreate(**fields, created=time.time()))
            except (ConfigError, Conflict, NotFound) as exc:
                # This Deployment's pod is refused: the others' are still made.
                log.warning("deployment %s/%s: pod %s refused: %s", create.namespace,
                            create.deployment, fields.get("name"), exc)
        nodes = set(self.node.machine.nodes.nodes)
        for delete in plan.deletes:
            pod = self.node.machine.pods.pods.get(delete.pod)
            if pod is None or pod.phase == "terminating":
                continue
            log.info("stopping pod %s: %s", delete.pod, delete.reason)
            # Its agent stops it, then deletes it; a pod whose node is gone has no agent.
            await self.node.propose(PodTerminate(delete.pod) if pod.node in nodes
                                    else PodDelete(delete.pod))
        events: dict[tuple[str, str], list[dict[str, Any]]] = {}
        now = time.monotonic()
        for ns, name, kind, reason, message in plan.events:
            said = self.said.get((ns, name, reason, message))
            if said is not None and now - said < REPEAT_AFTER:
                continue  # the same warning every pass would be a write every second
            self.said[(ns, name, reason, message)] = now
            events.setdefault((ns, name), []).append(
                {"time": time.time(), "type": kind, "reason": reason, "message": message})
        for key in sorted(set(plan.statuses) | set(events)):
            status = plan.statuses.get(key, self.statuses.get(key, {}))
            if status == self.statuses.get(key) and key not in events:
                continue
            await self.node.propose(ObjectStatus("Deployment", key[0], key[1], status,
                                                 tuple(events.get(key, []))))
            self.statuses[key] = status

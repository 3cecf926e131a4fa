"""What the deployment controller reads from the state, and the pods it writes. Pure.

The reconciler sees Deployments, pods and nodes as plain views; a pod it asks for is
made here: its container from the Deployment's template, the catalog service it joins
(the Service whose selector picks it) and the port and protocol that Service sends to.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from meshlet.deploy.published import port_protocol
from meshlet.deploy.reconciler import Create, DeploymentView, NodeView, PodView
from meshlet.kube_objects import Deployment, Service, container_spec, template_hash, validate_object


def limits(container: dict[str, Any]) -> tuple[float, int]:
    return float(container.get("cpus") or 0.0), int(container.get("memory") or 0)


def selecting_service(deployment: Deployment, services: list[Service]) -> Service | None:
    """The first Service (by name) whose selector picks the Deployment's pods."""
    for service in sorted(services, key=lambda s: s.name):
        if service.selects(deployment):
            return service
    return None


def pod_container(deployment: Deployment, service: Service | None) -> dict[str, Any]:
    """The pod's container; with a Service, its port is the Service's target port and
    its protocol the one that port's name says."""
    container = container_spec(deployment)
    if service is not None:
        first = service.spec.ports[0]
        target = deployment.port_number(first.target)
        if target is not None:
            container["port"] = target
        container["protocol"] = port_protocol(first.name)
    return container


@dataclass
class PodPlanner:
    deployment_records: list[dict[str, Any]]
    services: list[Service]
    pod_records: list[dict[str, Any]]
    node_records: list[dict[str, Any]]

    @classmethod
    def from_machine(cls, machine: Any) -> PodPlanner:
        deployments = [r.to_dict() for r in machine.objects.select("Deployment")]
        services = [validate_object(r.manifest) for r in machine.objects.select("Service")]
        return cls(deployments, [s for s in services if isinstance(s, Service)],
                   [p.to_dict() for p in machine.pods.pods.values()],
                   [n.to_dict() for n in machine.nodes.nodes.values()])

    def model(self, record: dict[str, Any], template_hash: str | None = None
              ) -> Deployment:
        """The Deployment; with ``template_hash`` of an earlier revision, as it was then
        (the pods of a rollout that stopped are replaced from their own template)."""
        manifest = record["manifest"]
        for revision in record.get("revisions", []):
            if template_hash is not None and revision["template_hash"] == template_hash:
                manifest = {**manifest, "spec": {**manifest["spec"],
                                                 "template": revision["template"]}}
        deployment = validate_object(manifest)
        assert isinstance(deployment, Deployment)
        return deployment

    @staticmethod
    def current(record: dict[str, Any], deployment: Deployment) -> tuple[str, int]:
        """The template hash and revision number the Deployment asks for now."""
        revisions = record.get("revisions") or []
        if revisions:
            return str(revisions[-1]["template_hash"]), int(revisions[-1]["revision"])
        return template_hash(deployment), 1

    def deployments(self) -> list[DeploymentView]:
        views = []
        for record in self.deployment_records:
            deployment = self.model(record)
            rolling = deployment.spec.strategy.rolling_update
            cpus, memory = limits(container_spec(deployment))
            status = record.get("status") or {}
            current_hash, revision = self.current(record, deployment)
            views.append(DeploymentView(
                namespace=deployment.namespace or "default", name=deployment.name,
                generation=record["generation"], replicas=deployment.spec.replicas,
                template_hash=current_hash, revision=revision,
                max_surge=rolling.max_surge, max_unavailable=rolling.max_unavailable,
                progress_deadline=float(deployment.spec.progress_deadline_seconds),
                status=status, cpus=cpus, memory=memory))
        return views

    def pods(self) -> list[PodView]:
        return [PodView(name=p["name"], namespace=p["namespace"], deployment=p["deployment"],
                        template_hash=p["template_hash"], node=p["node"], phase=p["phase"],
                        ready=p["ready"], restarts=p["restarts"],
                        created=float(p.get("created", 0.0)), detail=p.get("detail", ""),
                        cpus=limits(p["container"])[0], memory=limits(p["container"])[1])
                for p in self.pod_records]

    def nodes(self) -> list[NodeView]:
        return [NodeView(name=n["name"], zone=n.get("zone", ""), alive=True,
                         cpu=float(n.get("cpus", 0.0)), memory=int(n.get("memory", 0)))
                for n in self.node_records]

    def pod(self, create: Create, name: str) -> dict[str, Any]:
        """The PodCreate fields for one the reconciler asked for."""
        record = next(r for r in self.deployment_records
                      if (r["namespace"], r["name"]) == (create.namespace, create.deployment))
        deployment = self.model(record, create.template_hash)
        service = selecting_service(deployment, self.services)
        revision = next((int(r["revision"]) for r in record.get("revisions", [])
                         if r["template_hash"] == create.template_hash), 1)
        return {"name": name, "namespace": create.namespace,
                "deployment": create.deployment, "revision": revision,
                "template_hash": create.template_hash, "node": create.node,
                "service": service.name if service is not None else "",
                "container": pod_container(deployment, service)}

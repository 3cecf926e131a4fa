"""How `meshlet get` and `describe` show Kubernetes objects and pods, as kubectl does:
its resource names and short names, its columns, ages and `-o json|yaml` documents.
Rendering only: records in (as the API returns them), rows and text out."""

from __future__ import annotations

import datetime
from collections.abc import Callable
from typing import Any

from meshlet.errors import ConfigError

# kubectl's names for each kind: what `get` takes, what `apply` prints.
RESOURCES = {
    "Deployment": ("deployment.apps", ("deployments", "deployment", "deploy")),
    "Service": ("service", ("services", "service", "svc")),
    "Namespace": ("namespace", ("namespaces", "namespace", "ns")),
    "HorizontalPodAutoscaler": ("horizontalpodautoscaler.autoscaling",
                                ("horizontalpodautoscalers", "horizontalpodautoscaler",
                                 "hpa")),
    "Pod": ("pod", ("pods", "pod", "po")),
}
ALIASES = {alias: kind for kind, (resource, names) in RESOURCES.items()
           for alias in (*names, resource)}
PHASES = {"pending": "Pending", "running": "Running", "failed": "Failed",
          "terminating": "Terminating"}


def kind_of(word: str) -> str:
    """The kind a kubectl resource name means (``deploy`` → ``Deployment``)."""
    found = ALIASES.get(word.lower())
    if found is None:
        known = ", ".join(names[0] for _, names in RESOURCES.values())
        raise ConfigError(f"the server doesn't have a resource type {word!r} "
                          f"(known: {known})", "kind")
    return found


def split_ref(words: tuple[str, ...]) -> tuple[str, str]:
    """``KIND NAME`` or ``KIND/NAME`` as (kind, name)."""
    if len(words) == 1 and "/" in words[0]:
        kind, _, name = words[0].partition("/")
        return kind_of(kind), name
    if len(words) == 2:
        return kind_of(words[0]), words[1]
    raise ConfigError("give KIND NAME or KIND/NAME", "name")


def ref(kind: str, name: str) -> str:
    return f"{RESOURCES[kind][0]}/{name}"


def age(since: float, now: float) -> str:
    """kubectl's short ages: 45s, 3m10s, 42m, 5h3m, 20h, 3d4h, 12d."""
    if not since:
        return "<unknown>"
    seconds = max(0, int(now - since))
    minutes, hours, days = seconds // 60, seconds // 3600, seconds // 86400
    if seconds < 120:
        return f"{seconds}s"
    if minutes < 10:
        return f"{minutes}m{seconds % 60}s" if seconds % 60 else f"{minutes}m"
    if hours < 3:
        return f"{minutes}m"
    if hours < 8:
        return f"{hours}h{minutes % 60}m" if minutes % 60 else f"{hours}h"
    if hours < 48:
        return f"{hours}h"
    if days < 8:
        return f"{days}d{hours % 24}h" if hours % 24 else f"{days}d"
    return f"{days}d"


def labels(values: dict[str, str] | None) -> str:
    return ",".join(f"{k}={v}" for k, v in (values or {}).items()) or "<none>"


# -- documents (-o json|yaml) --------------------------------------------------------------

def timestamp(seconds: float) -> str | None:
    if not seconds:
        return None
    moment = datetime.datetime.fromtimestamp(seconds, datetime.UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def object_document(record: dict[str, Any]) -> dict[str, Any]:
    """The object as `kubectl get -o yaml` shows it: the manifest, with what the server
    keeps (generation, creation time) and the status. `meshlet apply` reads it back."""
    manifest = dict(record["manifest"])
    meta = dict(manifest["metadata"])
    meta["generation"] = record["generation"]
    created = timestamp(record.get("created", 0.0))
    if created:
        meta["creationTimestamp"] = created
    manifest["metadata"] = meta
    manifest["status"] = record.get("status") or {}
    return manifest


def pod_document(pod: dict[str, Any]) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": pod["name"], "namespace": pod["namespace"],
                            "labels": {"pod-template-hash": pod["template_hash"]},
                            "ownerDeployment": pod["deployment"]}
    created = timestamp(pod.get("created", 0.0))
    if created:
        meta["creationTimestamp"] = created
    return {"apiVersion": "v1", "kind": "Pod", "metadata": meta,
            "spec": {"nodeName": pod["node"], "container": pod["container"]},
            "status": {"phase": PHASES.get(pod["phase"], pod["phase"]),
                       "ready": pod["ready"], "restartCount": pod["restarts"],
                       "address": pod["address"], "message": pod["detail"],
                       "revision": pod["revision"], "service": pod["service"],
                       "pid": pod.get("pid"),
                       # what the autoscaler reads (as `kubectl top pod` shows usage)
                       "metrics": pod.get("metrics") or {}}}


def list_document(items: list[dict[str, Any]]) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "List", "items": items}


# -- tables --------------------------------------------------------------------------------

Row = list[Any]
Columns = tuple[list[str], Callable[[dict[str, Any], float, bool], Row]]


def _deployment_row(record: dict[str, Any], now: float, wide: bool) -> Row:
    spec, status = record["manifest"]["spec"], record.get("status") or {}
    row: Row = [record["name"], f"{status.get('readyReplicas', 0)}/{spec['replicas']}",
                status.get("updatedReplicas", 0), status.get("availableReplicas", 0),
                age(record.get("created", 0.0), now)]
    if wide:
        containers = spec["template"]["spec"]["containers"]
        row += [",".join(c["name"] for c in containers),
                ",".join(c["image"] for c in containers),
                labels(spec["selector"]["matchLabels"])]
    return row


def service_ports(spec: dict[str, Any]) -> str:
    return ",".join(f"{p['port']}:{p['nodePort']}/{p['protocol']}" if p.get("nodePort")
                    else f"{p['port']}/{p['protocol']}" for p in spec["ports"])


def _service_row(vips: dict[str, str]) -> Callable[[dict[str, Any], float, bool], Row]:
    def row(record: dict[str, Any], now: float, wide: bool) -> Row:
        spec = record["manifest"]["spec"]
        found: Row = [record["name"], spec["type"], vips.get(record["name"], "<none>"),
                      service_ports(spec), age(record.get("created", 0.0), now)]
        return [*found, labels(spec["selector"])] if wide else found
    return row


def _namespace_row(record: dict[str, Any], now: float, wide: bool) -> Row:
    return [record["name"], "Active", age(record.get("created", 0.0), now)]


def hpa_targets(spec: dict[str, Any], status: dict[str, Any]) -> str:
    current = {m.get("name"): m.get("current") for m in status.get("currentMetrics", [])
               if isinstance(m, dict)}
    shown = []
    for metric in spec["metrics"]:
        source = metric["resource"] or metric["pods"]
        name = source["name"] if metric["resource"] else source["metric"]["name"]
        target = source["target"]
        wanted = (f"{target['averageUtilization']}%" if target["type"] == "Utilization"
                  else f"{target['averageValue']:g}")
        now = current.get(name)
        shown.append(f"{name}: {'<unknown>' if now is None else now}/{wanted}")
    return ", ".join(shown) or "<none>"


def _hpa_row(record: dict[str, Any], now: float, wide: bool) -> Row:
    spec, status = record["manifest"]["spec"], record.get("status") or {}
    target = spec["scaleTargetRef"]
    return [record["name"], f"Deployment/{target['name']}", hpa_targets(spec, status),
            spec["minReplicas"], spec["maxReplicas"], status.get("currentReplicas", 0),
            age(record.get("created", 0.0), now)]


def _pod_row(pod: dict[str, Any], now: float, wide: bool) -> Row:
    row: Row = [pod["name"], f"{1 if pod['ready'] else 0}/1",
                PHASES.get(pod["phase"], pod["phase"]), pod["restarts"],
                age(pod.get("created", 0.0), now)]
    if wide:
        row += [pod["node"], pod["address"].rpartition(":")[0] or "<none>"]
    return row


def columns(kind: str, wide: bool, vips: dict[str, str]) -> Columns:
    """The headers of `get KIND` and the function making each row."""
    extra = {"Deployment": ["CONTAINERS", "IMAGES", "SELECTOR"], "Service": ["SELECTOR"],
             "Pod": ["NODE", "IP"]}.get(kind, []) if wide else []
    heads = {
        "Deployment": (["NAME", "READY", "UP-TO-DATE", "AVAILABLE", "AGE"], _deployment_row),
        "Service": (["NAME", "TYPE", "CLUSTER-IP", "PORT(S)", "AGE"], _service_row(vips)),
        "Namespace": (["NAME", "STATUS", "AGE"], _namespace_row),
        "HorizontalPodAutoscaler": (["NAME", "REFERENCE", "TARGETS", "MINPODS", "MAXPODS",
                                     "REPLICAS", "AGE"], _hpa_row),
        "Pod": (["NAME", "READY", "STATUS", "RESTARTS", "AGE"], _pod_row),
    }
    names, make = heads[kind]
    return [*names, *extra], make

"""`meshlet describe`: an object (or a pod) in kubectl's describe layout, with its
status conditions and its Events table (Type, Reason, Age, Message)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from meshlet.cli.kube_views import PHASES, age, hpa_targets, labels, service_ports

Lines = Iterator[str]


def _field(name: str, value: object, indent: int = 0) -> str:
    return f"{' ' * indent}{name + ':':<22} {value}"


def _grid(rows: list[list[str]], indent: int = 2) -> Lines:
    widths = [max(len(str(r[i])) for r in rows) for i in range(len(rows[0]))]
    for row in rows:
        yield (" " * indent + "  ".join(str(c).ljust(w) for c, w in
                                        zip(row, widths, strict=True))).rstrip()


def _probe(probe: dict[str, Any] | None) -> str:
    if not probe:
        return "<none>"
    port = probe.get("httpGet") or probe.get("tcpSocket") or {}
    how = (f"http-get :{port.get('port')}{port.get('path', '/')}" if probe.get("httpGet")
           else f"tcp-socket :{port.get('port')}")
    return (f"{how} delay={probe['initialDelaySeconds']}s timeout={probe['timeoutSeconds']}s"
            f" period={probe['periodSeconds']}s #success={probe['successThreshold']}"
            f" #failure={probe['failureThreshold']}")


def _limits(limits: dict[str, Any]) -> str:
    shown = []
    cpu = limits.get("cpu")
    if cpu:
        shown.append(f"cpu: {cpu:g}" if cpu == int(cpu) else f"cpu: {round(cpu * 1000)}m")
    if limits.get("memory"):
        shown.append(f"memory: {limits['memory'] // 2 ** 20}Mi")
    return ", ".join(shown) or "<none>"


def _containers(template: dict[str, Any]) -> Lines:
    yield "Pod Template:"
    yield _field("  Labels", labels(template["metadata"]["labels"]))
    yield "  Containers:"
    for c in template["spec"]["containers"]:
        yield f"   {c['name']}:"
        yield _field("Image", c["image"], 4)
        ports = ",".join(f"{p['containerPort']}/{p['protocol']}" for p in c["ports"])
        yield _field("Port", ports or "<none>", 4)
        if c["command"]:
            yield _field("Command", " ".join(c["command"]), 4)
        if c["args"]:
            yield _field("Args", " ".join(c["args"]), 4)
        yield _field("Limits", _limits(c["resources"]["limits"]), 4)
        yield _field("Readiness", _probe(c["readinessProbe"]), 4)
        yield _field("Liveness", _probe(c["livenessProbe"]), 4)
        env = ", ".join(f"{e['name']}={e['value']}" for e in c["env"])
        yield _field("Environment", env or "<none>", 4)


def _conditions(status: dict[str, Any]) -> Lines:
    found = [c for c in status.get("conditions") or [] if isinstance(c, dict)]
    if not found:
        return
    yield "Conditions:"
    yield from _grid([["Type", "Status", "Reason", "Message"],
                      ["----", "------", "------", "-------"]] +
                     [[str(c.get("type", "")), str(c.get("status", "")),
                       str(c.get("reason", "")), str(c.get("message", ""))] for c in found])


def _events(events: list[dict[str, Any]], now: float) -> Lines:
    if not events:
        yield "Events:                 <none>"
        return
    yield "Events:"
    rows = [["Type", "Reason", "Age", "Message"], ["----", "------", "----", "-------"]]
    for e in events:
        when = age(e["time"], now) + (f" (x{e['count']})" if e.get("count", 1) > 1 else "")
        rows.append([e["type"], e["reason"], when, e["message"]])
    yield from _grid(rows)


def _deployment(spec: dict[str, Any], status: dict[str, Any]) -> Lines:
    yield _field("Selector", labels(spec["selector"]["matchLabels"]))
    yield _field("Replicas", f"{spec['replicas']} desired | "
                             f"{status.get('updatedReplicas', 0)} updated | "
                             f"{status.get('replicas', 0)} total | "
                             f"{status.get('availableReplicas', 0)} available | "
                             f"{status.get('unavailableReplicas', 0)} unavailable")
    rolling = spec["strategy"]["rollingUpdate"]
    yield _field("StrategyType", spec["strategy"]["type"])
    yield _field("RollingUpdateStrategy", f"{rolling['maxUnavailable']} max unavailable, "
                                          f"{rolling['maxSurge']} max surge")
    yield _field("RevisionHistoryLimit", spec["revisionHistoryLimit"])
    yield _field("ProgressDeadline", f"{spec['progressDeadlineSeconds']}s")
    yield from _containers(spec["template"])


def _service(spec: dict[str, Any], vip: str) -> Lines:
    yield _field("Selector", labels(spec["selector"]))
    yield _field("Type", spec["type"])
    yield _field("IP", vip or "<none>")
    yield _field("Port(s)", service_ports(spec))
    for p in spec["ports"]:
        yield _field("TargetPort", f"{p['targetPort'] or p['port']}/{p['protocol']}")


def _hpa(spec: dict[str, Any], status: dict[str, Any]) -> Lines:
    target = spec["scaleTargetRef"]
    yield _field("Reference", f"Deployment/{target['name']}")
    yield _field("Metrics", hpa_targets(spec, status))
    yield _field("Min replicas", spec["minReplicas"])
    yield _field("Max replicas", spec["maxReplicas"])
    yield _field("Scale-down window",
                 f"{spec['behavior']['scaleDown']['stabilizationWindowSeconds']}s")
    yield _field("Deployment pods", f"{status.get('currentReplicas', 0)} current / "
                                    f"{status.get('desiredReplicas', 0)} desired")


def describe_object(record: dict[str, Any], now: float, vip: str = "") -> str:
    manifest = record["manifest"]
    meta, status = manifest["metadata"], record.get("status") or {}
    lines = [_field("Name", record["name"])]
    if record["kind"] != "Namespace":
        lines.append(_field("Namespace", record["namespace"]))
    lines += [_field("Labels", labels(meta.get("labels"))),
              _field("Annotations", labels(meta.get("annotations"))),
              _field("Age", age(record.get("created", 0.0), now))]
    if record["kind"] == "Namespace":
        lines.append(_field("Status", "Active"))
    else:
        lines.append(_field("Generation", record["generation"]))
    spec = manifest.get("spec", {})
    if record["kind"] == "Deployment":
        lines += _deployment(spec, status)
    elif record["kind"] == "Service":
        lines += _service(spec, vip)
    elif record["kind"] == "HorizontalPodAutoscaler":
        lines += _hpa(spec, status)
    lines += _conditions(status)
    lines += _events(record.get("events") or [], now)
    return "\n".join(lines)


def describe_pod(pod: dict[str, Any], now: float) -> str:
    container = pod["container"]
    lines = [_field("Name", pod["name"]), _field("Namespace", pod["namespace"]),
             _field("Node", pod["node"] or "<none>"),
             _field("Age", age(pod.get("created", 0.0), now)),
             _field("Labels", f"pod-template-hash={pod['template_hash']}"),
             _field("Controlled By", f"Deployment/{pod['deployment']}"),
             _field("Revision", pod["revision"]),
             _field("Status", PHASES.get(pod["phase"], pod["phase"])),
             _field("Ready", "True" if pod["ready"] else "False"),
             _field("Restart Count", pod["restarts"]),
             _field("Address", pod["address"] or "<none>"),
             _field("Service", pod["service"] or "<none>"),
             _field("Message", pod["detail"] or "<none>"),
             "Container:",
             _field("Name", container["name"], 2),
             _field("Image", container["image"], 2),
             _field("Port", container["port"] or "<none>", 2)]
    return "\n".join(lines)

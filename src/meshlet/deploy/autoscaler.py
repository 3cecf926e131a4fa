"""The HorizontalPodAutoscaler's decision, as Kubernetes makes it; pure.

Drive it once per sync period (Kubernetes: 15 s) for each HPA:
``decide(hpa, current, metrics, history, now)`` returns a :class:`Decision`. The caller
scales the Deployment to ``decision.desired`` when ``decision.changed``, records
``decision.event()`` on the HPA (``SuccessfulRescale``), counts it, and keeps
``decision.history`` for the next call (it is the HPA's only memory: losing it, as
on a leader change, only makes the next scale-down wait out a fresh window).

The rules, in the order applied (Kubernetes' "algorithm details"):

1. Per metric, ``ratio = current value / target`` and the proposal is
   ``ceil(current replicas * ratio)``; within the tolerance (``|ratio - 1| <= 0.1``) the
   proposal is the current count. ``metrics`` hold averages over the ready replicas:
   ``cpu`` in percent of the request, ``requests_per_second`` and ``p95_latency_seconds``
   as measured by the sidecars. A metric without a value is skipped.
2. The recommendation is the largest proposal. If a metric was skipped and the others
   propose a scale-down, nothing changes (a missing measure might have asked for more);
   if every metric is missing, nothing changes.
3. Scale-down stabilisation: the recommendation is recorded in the history, and a
   scale-down goes only as low as the highest recommendation in the last
   ``behavior.scaleDown.stabilizationWindowSeconds`` (default 300). Scale-up is at once.
4. The result is clamped to ``[minReplicas, maxReplicas]``.
5. A target at 0 replicas is not scaled (Kubernetes: ScalingDisabled).

An HPA with no metrics scales on CPU at 80 %, the Kubernetes default.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from meshlet.kube_objects import HorizontalPodAutoscaler, MetricSpec
from meshlet.observe.samples import Window

TOLERANCE = 0.1
DEFAULT_CPU_UTILIZATION = 80
METRICS = ("cpu", "requests_per_second", "p95_latency_seconds")
# A ratio or product that is exact on paper but not in binary (0.07 / 0.01 is
# 7.000000000000001, 1.1 - 1 is 0.10000000000000009): round away such noise first, or
# the HPA adds a replica for it, or leaves the tolerance at its very edge.
_DIGITS = 9


@dataclass(frozen=True)
class Recommendation:
    """One past recommendation (before clamping), as the stabilisation window keeps it."""

    time: float
    replicas: int


@dataclass(frozen=True)
class Target:
    """One metric the HPA scales on: its name in ``metrics`` and its target value."""

    metric: str
    value: float

    @property
    def description(self) -> str:
        """How Kubernetes names the metric in its events."""
        if self.metric == "cpu":
            return "cpu resource utilization (percentage of request)"
        return f"pods metric {self.metric}"


@dataclass(frozen=True)
class MetricProposal:
    """What one metric asked for. ``replicas`` is None when the metric had no value."""

    target: Target
    current: float | None
    ratio: float | None
    replicas: int | None

    @property
    def skipped(self) -> bool:
        return self.replicas is None


@dataclass(frozen=True)
class Decision:
    """The outcome of one evaluation. ``reason`` is Kubernetes' event message when the
    size changes ("New size: 5; reason: ... above target"), else its condition message
    saying why not. ``limited`` is "TooManyReplicas" or "TooFewReplicas" when the
    clamp to [min, max] cut the recommendation."""

    current: int
    desired: int
    reason: str
    proposals: tuple[MetricProposal, ...]
    history: tuple[Recommendation, ...]
    limited: str | None = None

    @property
    def changed(self) -> bool:
        return self.desired != self.current

    def event(self) -> dict[str, str] | None:
        """The event to record when the size changes (type, reason, message)."""
        if not self.changed:
            return None
        return {"type": "Normal", "reason": "SuccessfulRescale", "message": self.reason}


def pod_metrics(windows: Sequence[Window]) -> dict[str, float | None]:
    """The metrics ``decide`` reads, from one window per ready replica (two scrapes of
    its sidecar, see :mod:`meshlet.observe.samples`): the averages over the replicas of
    their request rates and of their p95 latencies (a replica that served nothing has
    no p95 and is left out of that average). CPU is not measured: ``cpu`` is None."""
    p95s = [q for w in windows if (q := w.quantile(0.95)) is not None]
    return {"requests_per_second": sum(w.rate for w in windows) / len(windows)
            if windows else None,
            "p95_latency_seconds": sum(p95s) / len(p95s) if p95s else None,
            "cpu": None}


def replica_measures(window: Window, cpu_used: float | None, cpus: float | None
                     ) -> dict[str, float | None]:
    """One replica's measures over ``window``, as its agent reports them: its request
    rate and p95 latency (None if it served nothing), and its CPU utilisation in
    percent of its CPU limit (of one core without a limit) from ``cpu_used``, the CPU
    seconds its container used in the window (None: not measured)."""
    cores = cpus if cpus and cpus > 0 else 1.0
    cpu = (100.0 * cpu_used / (window.seconds * cores)
           if cpu_used is not None and window.seconds > 0 else None)
    return {"requests_per_second": _measure(window.rate, 3),
            "p95_latency_seconds": _measure(window.quantile(0.95), 6),
            "cpu": _measure(cpu, 3)}


def _measure(value: float | None, digits: int) -> float | None:
    """A value the state takes: finite, 0 or more (a sidecar's counters are text that
    can say NaN or +Inf; a restarted container's CPU time starts again at 0)."""
    if value is None or not math.isfinite(value):
        return None
    return round(max(value, 0.0), digits)


def average_measures(reports: Iterable[Mapping[str, float | None]]
                     ) -> dict[str, float | None]:
    """The metrics ``decide`` reads, from the measures the ready replicas reported: per
    metric the average over the replicas that have a value (None if none has)."""
    values: dict[str, list[float]] = {name: [] for name in METRICS}
    for report in reports:
        for name in METRICS:
            value = report.get(name)
            if value is not None:
                values[name].append(float(value))
    return {name: sum(found) / len(found) if found else None
            for name, found in values.items()}


def targets(hpa: HorizontalPodAutoscaler) -> tuple[Target, ...]:
    """The HPA's metric targets (CPU at 80 % when it names none, as Kubernetes)."""
    if not hpa.spec.metrics:
        return (Target("cpu", float(DEFAULT_CPU_UTILIZATION)),)
    return tuple(_target(m) for m in hpa.spec.metrics)


def _target(spec: MetricSpec) -> Target:
    # kube_objects.problems() guarantees the member and target type match the metric type.
    if spec.resource is not None:
        value = spec.resource.target.average_utilization
        assert value is not None
        return Target(spec.resource.name, float(value))
    assert spec.pods is not None and spec.pods.target.average_value is not None
    return Target(spec.pods.metric.name, spec.pods.target.average_value)


def propose(target: Target, current_replicas: int, value: float | None) -> MetricProposal:
    """One metric's proposal: ``ceil(current * value / target)`` outside the tolerance."""
    if value is None or math.isnan(value) or target.value <= 0:
        return MetricProposal(target, value, None, None)
    ratio = value / target.value
    if round(abs(ratio - 1.0), _DIGITS) <= TOLERANCE:
        return MetricProposal(target, value, ratio, current_replicas)
    return MetricProposal(target, value, ratio,
                          math.ceil(round(current_replicas * ratio, _DIGITS)))


def decide(hpa: HorizontalPodAutoscaler, current: int, metrics: Mapping[str, float | None],
           history: Sequence[Recommendation], now: float) -> Decision:
    """The HPA's decision for a Deployment at ``current`` replicas (see the module doc).

    ``history`` is the previous decision's ``history`` (empty at first); ``now`` any
    clock's seconds, the same clock each call. Raises nothing: bad input is refused
    when the HPA is applied.
    """
    spec = hpa.spec
    window = float(spec.behavior.scale_down.stabilization_window_seconds)
    recent = tuple(r for r in history if r.time > now - window)
    proposals = tuple(propose(t, current, metrics.get(t.metric)) for t in targets(hpa))
    if current == 0:
        return Decision(0, 0, "scaling is disabled since the replica count of the target "
                        "is zero", proposals, tuple(history))
    valid = [p for p in proposals if p.replicas is not None]
    if not valid:
        return Decision(current, current, f"invalid metrics ({len(proposals)} invalid out of "
                        f"{len(proposals)}): no value for {_names(proposals)}",
                        proposals, recent)
    leader = max(valid, key=lambda p: p.replicas or 0)
    recommended = leader.replicas or 0
    if recommended < current and len(valid) < len(proposals):
        return Decision(current, current, "scale down skipped: no value for "
                        f"{_names(p for p in proposals if p.skipped)}", proposals, recent)
    history_out = (*recent, Recommendation(now, recommended))
    stabilized = recommended
    if recommended < current:
        stabilized = min(current, max(r.replicas for r in history_out))
    desired = min(max(stabilized, spec.min_replicas), spec.max_replicas)
    limited = ("TooManyReplicas" if stabilized > spec.max_replicas else
               "TooFewReplicas" if stabilized < spec.min_replicas else None)
    reason = _reason(current, desired, recommended, stabilized, leader, spec.min_replicas,
                     spec.max_replicas)
    return Decision(current, desired, reason, proposals, history_out, limited)


def _reason(current: int, desired: int, recommended: int, stabilized: int,
            leader: MetricProposal, low: int, high: int) -> str:
    if desired != current:
        if current > high:
            why = "Current number of replicas above Spec.MaxReplicas"
        elif current < low:
            why = "Current number of replicas below Spec.MinReplicas"
        elif desired > current:
            why = f"{leader.target.description} above target"
        else:
            why = "All metrics below target"
        return f"New size: {desired}; reason: {why}"
    if recommended > high:
        return "the desired replica count is more than the maximum replica count"
    if recommended < low:
        return "the desired replica count is less than the minimum replica count"
    if stabilized != recommended:
        return (f"recent recommendations were higher than current one, applying the "
                f"highest recent recommendation (recommended {recommended})")
    return "recommended size matches current size"


def _names(proposals: Iterable[MetricProposal]) -> str:
    return ", ".join(p.target.metric for p in proposals if p.skipped)


def status_of(decision: Decision, previous: Mapping[str, object], now: float
              ) -> dict[str, object]:
    """The HPA's status after ``decision`` (``previous``: its status before), in the
    shape ``meshlet get hpa`` and ``describe`` read: replicas, each metric's current
    value, the last scale time and the conditions Kubernetes sets."""
    current = [{"name": p.target.metric, "current": _shown(p)} for p in decision.proposals]
    able = not decision.reason.startswith(("invalid metrics", "scaling is disabled"))
    return {
        "currentReplicas": decision.current, "desiredReplicas": decision.desired,
        "currentMetrics": current,
        "lastScaleTime": now if decision.changed else previous.get("lastScaleTime"),
        "conditions": [
            {"type": "AbleToScale", "status": "True", "reason": "ReadyForNewScale",
             "message": "the HPA controller was able to update the target scale"},
            {"type": "ScalingActive", "status": "True" if able else "False",
             "reason": "ValidMetricFound" if able else "FailedGetMetrics",
             "message": decision.reason if not able else
             "the HPA was able to compute the replica count"},
            {"type": "ScalingLimited", "status": "True" if decision.limited else "False",
             "reason": decision.limited or "DesiredWithinRange",
             "message": decision.reason if decision.limited else
             "the desired count is within the acceptable range"},
        ]}


def _shown(proposal: MetricProposal) -> str | None:
    if proposal.current is None:
        return None
    if proposal.target.metric == "cpu":
        return f"{round(proposal.current)}%"
    return f"{proposal.current:.3g}"

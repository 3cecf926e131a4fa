"""The HPA decision: Kubernetes' formula, tolerance, stabilisation window and clamps."""

from __future__ import annotations

import math
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from meshlet.deploy.autoscaler import Decision, Recommendation, decide, propose, targets
from meshlet.kube_objects import HorizontalPodAutoscaler

CPU = {"type": "Resource", "resource": {"name": "cpu", "target": {
    "type": "Utilization", "averageUtilization": 50}}}
RPS = {"type": "Pods", "pods": {"metric": {"name": "requests_per_second"},
                                "target": {"type": "AverageValue", "averageValue": "100"}}}
P95 = {"type": "Pods", "pods": {"metric": {"name": "p95_latency_seconds"},
                                "target": {"type": "AverageValue", "averageValue": "250m"}}}


def hpa(*metrics: dict[str, Any], low: int = 1, high: int = 10,
        window: int | None = None) -> HorizontalPodAutoscaler:
    spec: dict[str, Any] = {"scaleTargetRef": {"kind": "Deployment", "name": "web"},
                            "minReplicas": low, "maxReplicas": high, "metrics": list(metrics)}
    if window is not None:
        spec["behavior"] = {"scaleDown": {"stabilizationWindowSeconds": window}}
    return HorizontalPodAutoscaler.model_validate(
        {"apiVersion": "autoscaling/v2", "kind": "HorizontalPodAutoscaler",
         "metadata": {"name": "web"}, "spec": spec})


def test_scale_up_is_ceil_of_current_times_ratio_and_names_the_metric() -> None:
    d = decide(hpa(RPS), 3, {"requests_per_second": 150.0}, (), now=0.0)
    assert d.desired == 5  # ceil(3 * 150 / 100) = ceil(4.5)
    assert d.changed
    assert d.reason == "New size: 5; reason: pods metric requests_per_second above target"
    assert d.event() == {"type": "Normal", "reason": "SuccessfulRescale", "message": d.reason}
    assert [(p.target.metric, p.ratio, p.replicas) for p in d.proposals] == \
        [("requests_per_second", 1.5, 5)]
    assert d.history == (Recommendation(0.0, 5),)


def test_the_largest_proposal_wins() -> None:
    d = decide(hpa(CPU, RPS, P95), 4, {"cpu": 60.0, "requests_per_second": 50.0,
                                       "p95_latency_seconds": 0.5}, (), now=0.0)
    assert [p.replicas for p in d.proposals] == [5, 2, 8]
    assert d.desired == 8
    assert d.reason.endswith("reason: pods metric p95_latency_seconds above target")


def test_cpu_reason_is_kubernetes_wording() -> None:
    d = decide(hpa(CPU), 2, {"cpu": 100.0}, (), now=0.0)
    assert d.reason == ("New size: 4; reason: cpu resource utilization (percentage of "
                        "request) above target")


def test_within_tolerance_nothing_changes() -> None:
    for value in (91.0, 100.0, 110.0):
        d = decide(hpa(RPS, high=20), 10, {"requests_per_second": value}, (), now=0.0)
        assert (d.desired, d.changed) == (10, False), value
        assert d.reason == "recommended size matches current size"
    assert decide(hpa(RPS, high=20), 10, {"requests_per_second": 111.0}, (), 0.0).desired == 12


def test_float_noise_adds_no_replica() -> None:
    metric = {"type": "Pods", "pods": {"metric": {"name": "requests_per_second"},
                                       "target": {"type": "AverageValue", "averageValue": "10m"}}}
    assert propose(targets(hpa(metric))[0], 1, 0.07).replicas == 7


def test_scale_down_waits_for_the_highest_recommendation_in_the_window() -> None:
    policy = hpa(RPS, window=300)
    history: tuple[Recommendation, ...] = ()
    d = decide(policy, 6, {"requests_per_second": 100.0}, history, now=0.0)
    history = d.history
    # Load drops: the recommendation is 2, but 6 was recommended inside the window.
    d = decide(policy, 6, {"requests_per_second": 30.0}, history, now=60.0)
    assert (d.desired, d.changed) == (6, False)
    assert d.reason.startswith("recent recommendations were higher than current one")
    d = decide(policy, 6, {"requests_per_second": 50.0}, d.history, now=120.0)
    assert d.desired == 6
    # 300 s after the last recommendation of 6, the highest left is 3 (at t=120).
    d = decide(policy, 6, {"requests_per_second": 30.0}, d.history, now=300.0)
    assert d.desired == 3
    assert d.reason == "New size: 3; reason: All metrics below target"
    assert [r.time for r in d.history] == [60.0, 120.0, 300.0]


def test_scale_down_with_no_window_is_at_once() -> None:
    d = decide(hpa(RPS, window=0), 6, {"requests_per_second": 100.0}, (), now=0.0)
    d = decide(hpa(RPS, window=0), 6, {"requests_per_second": 10.0}, d.history, now=1.0)
    assert d.desired == 1


def test_clamped_to_min_and_max() -> None:
    d = decide(hpa(RPS, low=2, high=5), 4, {"requests_per_second": 1000.0}, (), now=0.0)
    assert (d.desired, d.limited) == (5, "TooManyReplicas")
    d = decide(hpa(RPS, low=2, high=5), 5, {"requests_per_second": 1000.0}, (), now=0.0)
    assert (d.desired, d.changed) == (5, False)
    assert d.reason == "the desired replica count is more than the maximum replica count"
    d = decide(hpa(RPS, low=2, high=5, window=0), 2, {"requests_per_second": 1.0}, (), 0.0)
    assert (d.desired, d.limited) == (2, "TooFewReplicas")
    assert d.reason == "the desired replica count is less than the minimum replica count"


def test_outside_the_bounds_is_brought_back_in() -> None:
    d = decide(hpa(RPS, low=3, high=5), 1, {"requests_per_second": 100.0}, (), now=0.0)
    assert d.reason == "New size: 3; reason: Current number of replicas below Spec.MinReplicas"
    d = decide(hpa(RPS, low=3, high=5), 9, {"requests_per_second": 100.0}, (), now=0.0)
    assert d.reason == "New size: 5; reason: Current number of replicas above Spec.MaxReplicas"


def test_a_missing_metric_is_skipped_and_blocks_only_a_scale_down() -> None:
    d = decide(hpa(CPU, RPS), 2, {"requests_per_second": 300.0}, (), now=0.0)
    assert d.desired == 6
    assert d.proposals[0].skipped and not d.proposals[1].skipped
    d = decide(hpa(CPU, RPS, window=0), 4, {"requests_per_second": 10.0}, (), now=0.0)
    assert (d.desired, d.reason) == (4, "scale down skipped: no value for cpu")
    d = decide(hpa(CPU, RPS), 4, {}, (), now=0.0)
    assert not d.changed
    assert d.reason == ("invalid metrics (2 invalid out of 2): no value for cpu, "
                        "requests_per_second")
    assert math.isnan(float("nan")) and propose(targets(hpa(RPS))[0], 2, float("nan")).skipped


def test_zero_replicas_are_not_scaled() -> None:
    d = decide(hpa(RPS), 0, {"requests_per_second": 500.0}, (Recommendation(0.0, 3),), 1.0)
    assert (d.desired, d.changed) == (0, False)
    assert d.reason.startswith("scaling is disabled")
    assert d.history == (Recommendation(0.0, 3),)


def test_no_metrics_means_cpu_at_80_percent() -> None:
    assert [(t.metric, t.value) for t in targets(hpa())] == [("cpu", 80.0)]
    assert decide(hpa(), 2, {"cpu": 160.0}, (), now=0.0).desired == 4


# --- properties -------------------------------------------------------------------------

replicas = st.integers(1, 50)
values = st.one_of(st.none(), st.floats(0, 1e4, allow_nan=False))


@given(replicas, st.integers(1, 20), st.integers(1, 30), values, values,
       st.lists(st.tuples(st.floats(0, 1000), st.integers(1, 60)), max_size=6),
       st.floats(0, 1000))
def test_properties(current: int, low: int, span: int, rps: float | None,
                    cpu: float | None, past: list[tuple[float, int]], now: float) -> None:
    high = low + span
    policy = hpa(CPU, RPS, low=low, high=high, window=120)
    history = tuple(Recommendation(t, r) for t, r in sorted(past) if t <= now)
    d: Decision = decide(policy, current, {"requests_per_second": rps, "cpu": cpu},
                         history, now)
    # Always within the bounds when it changes anything; never moves without a reason.
    if d.changed:
        assert low <= d.desired <= high
        assert d.reason.startswith(f"New size: {d.desired}; reason: ")
    # Scale-up follows the largest proposal at once (clamped); a scale-down never
    # goes below what the window recommended.
    proposed = [p.replicas for p in d.proposals if p.replicas is not None]
    if low <= current <= high and proposed and max(proposed) > current:
        assert d.desired == min(max(proposed), high)
    if low <= current <= high and d.desired < current:
        assert d.desired >= max(r.replicas for r in d.history if r.time > now - 120)
    # The window keeps only recent recommendations.
    assert all(r.time > now - 120 for r in d.history)


@given(replicas, st.floats(0.001, 1e4), st.floats(0.001, 1e4))
def test_proposal_is_monotonic_in_the_metric(current: int, a: float, b: float) -> None:
    target = targets(hpa(RPS))[0]
    low, high = sorted((a, b))
    first, second = propose(target, current, low), propose(target, current, high)
    assert first.replicas is not None and second.replicas is not None
    # Within tolerance a proposal is the current count, which may exceed a proposal
    # just above the band; outside it, more load never asks for fewer replicas.
    if abs(first.ratio - 1) > 0.1 and abs(second.ratio - 1) > 0.1:  # type: ignore[operator]
        assert first.replicas <= second.replicas

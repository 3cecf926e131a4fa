"""The server's Prometheus metrics: write latency, apply time and blocking queries
measured as they happen, the rest (Raft term, role, indexes, elections) read from the
node when ``/metrics`` is scraped."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, disable_created_metrics
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    Metric,
    SummaryMetricFamily,
)
from prometheus_client.registry import Collector

COMMIT_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
                  2.5, 5.0)
APPLY_BUCKETS = (0.00001, 0.000025, 0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025,
                 0.005, 0.01, 0.025, 0.1)
WAKE_REASONS = ("changed", "timeout")


def apply_histogram() -> Histogram:
    """Time the state machine takes to apply one committed entry. Made by the Raft node
    that measures it, and registered with the server's registry by the server."""
    disable_created_metrics()
    return Histogram("meshlet_raft_apply_duration_seconds",
                     "Time to apply one committed log entry to the state machine.",
                     buckets=APPLY_BUCKETS, registry=None)
ROLES = ("follower", "pre-candidate", "candidate", "leader")
# Why a Raft frame is dropped: its sender is not a member, it names another server,
# it is malformed, or the connection it came on has no valid cluster certificate (or
# one for another server than the frame claims to come from).
DROP_REASONS = ("not_member", "wrong_recipient", "malformed", "bad_certificate",
                "wrong_sender")


class NodeCollector(Collector):
    def __init__(self, status: Callable[[], dict[str, Any]], index: Callable[[], int]) -> None:
        self.status = status
        self.index = index

    def collect(self) -> Iterator[Metric]:
        yield GaugeMetricFamily("meshlet_state_index",
                                "Last log index applied to the state machine.", self.index())
        info = self.status()["raft"]
        yield GaugeMetricFamily("meshlet_raft_term", "Current Raft term.", info["term"])
        role = GaugeMetricFamily("meshlet_raft_role", "1 for this server's current role.",
                                 labels=["role"])
        for name in ROLES:
            role.add_metric([name], 1.0 if info["role"] == name else 0.0)
        yield role
        yield GaugeMetricFamily("meshlet_raft_commit_index", "Highest committed index.",
                                info["commit"])
        yield GaugeMetricFamily("meshlet_raft_applied_index", "Highest applied index.",
                                info["applied"])
        yield GaugeMetricFamily("meshlet_raft_last_index", "Last index in the log.",
                                info["last_index"])
        yield CounterMetricFamily("meshlet_raft_leader_changes",
                                  "Times this server saw the leader change.",
                                  info["leader_changes"])
        yield CounterMetricFamily("meshlet_raft_elections",
                                  "Elections this server started as a candidate.",
                                  info["elections"])
        dropped = CounterMetricFamily(
            "meshlet_raft_frames_dropped",
            "Raft frames (or connections, for bad_certificate) refused, by reason.",
            labels=["reason"])
        counts = info.get("frames_dropped", {})
        for reason in DROP_REASONS:
            dropped.add_metric([reason], counts.get(reason, 0))
        yield dropped
        yield GaugeMetricFamily("meshlet_raft_snapshot_bytes",
                                "Size of the last snapshot taken or installed.",
                                info["snapshot_bytes"])
        yield SummaryMetricFamily(
            "meshlet_raft_snapshot_duration_seconds",
            "Time to take (or install) a snapshot and compact the log.",
            count_value=info["snapshots_taken"] + info["snapshots_installed"],
            sum_value=info["snapshot_seconds"])


class RefusalCollector(Collector):
    """Requests the ACLs refused, by code (unauthenticated, forbidden)."""

    def __init__(self, refused: Callable[[], dict[str, int]]) -> None:
        self.refused = refused

    def collect(self) -> Iterator[Metric]:
        family = CounterMetricFamily("meshlet_acl_refusals",
                                     "API requests refused by access control.",
                                     labels=["code"])
        for code, count in sorted(self.refused().items()):
            family.add_metric([code], count)
        yield family


class ServerMetrics:
    def __init__(self, status: Callable[[], dict[str, Any]], index: Callable[[], int],
                 refused: Callable[[], dict[str, int]] = dict) -> None:
        disable_created_metrics()
        self.registry = CollectorRegistry()
        self.commit_latency = Histogram(
            "meshlet_commit_latency_seconds",
            "From a write's arrival to its acknowledgement (durable, applied).",
            buckets=COMMIT_BUCKETS, registry=self.registry)
        self.blocking_queries = Gauge(
            "meshlet_api_blocking_queries",
            "Blocking queries (watches: ?index=&wait=) waiting for a change now.",
            registry=self.registry)
        self.blocking_returns = Counter(
            "meshlet_api_blocking_query_returns",
            "Blocking queries answered, by why: the index moved past the one asked for "
            "(changed), or the wait ran out (timeout).", ["reason"], registry=self.registry)
        for reason in WAKE_REASONS:
            self.blocking_returns.labels(reason)
        self.registry.register(NodeCollector(status, index))
        self.registry.register(RefusalCollector(refused))

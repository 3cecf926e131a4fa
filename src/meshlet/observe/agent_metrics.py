"""The agent's Prometheus metrics, declared once: what its drivers count as it happens
(restarts, health-check results, failed reports and heartbeats, pod meter scrapes) and
what is read from the agent when ``/metrics`` is scraped (workloads by state).

Label sets are bounded: ``service`` is one of the services this node runs, ``state``
one of ``STATES``, ``result`` and ``report`` fixed sets. Every child of a fixed set is
made up front, so each series exists (at 0) from the agent's first scrape: a rate over
it starts from its first increment, and a dashboard never shows "no data" for a counter
that has not moved yet.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator

from prometheus_client import CollectorRegistry, Counter, Gauge, disable_created_metrics
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

STATES = ("passing", "warning", "critical")
CHECK_RESULTS = ("passed", "failed")
# What the agent tells the server: an instance's registration and health, a pod's
# report, the node's registration (its heartbeat).
REPORTS = ("instance", "pod", "node")
SCRAPE_RESULTS = ("ok", "failed")


class WorkloadCollector(Collector):
    """Workloads by state, read from the agent at each scrape."""

    def __init__(self, states: Callable[[], Iterable[str]]) -> None:
        self.states = states

    def collect(self) -> Iterator[Metric]:
        counts = dict.fromkeys(STATES, 0)
        for state in self.states():
            if state in counts:
                counts[state] += 1
        family = GaugeMetricFamily("meshlet_agent_workloads",
                                   "Workloads (service instances and pods) on this node, by "
                                   "health state.", labels=["state"])
        for state, count in counts.items():
            family.add_metric([state], count)
        yield family


class AgentMetrics:
    """``states`` gives each workload's health state when scraped."""

    def __init__(self, states: Callable[[], Iterable[str]] = tuple) -> None:
        disable_created_metrics()
        self.registry = CollectorRegistry()
        self.services: set[str] = set()
        r = self.registry
        self.restarts = Counter(
            "meshlet_agent_workload_restarts",
            "Times a workload's app (or its sidecar) exited and was started again.",
            ["service"], registry=r)
        self.health_checks = Counter(
            "meshlet_agent_health_checks", "Health checks and probes run, by result.",
            ["service", "result"], registry=r)
        self.report_failures = Counter(
            "meshlet_agent_report_failures",
            "Reports to the server that failed (and are retried): instance registration "
            "and health, pod reports, node registration and heartbeats.",
            ["report"], registry=r)
        for report in REPORTS:
            self.report_failures.labels(report)
        self.pod_scrapes = Counter(
            "meshlet_agent_pod_meter_scrapes",
            "Scrapes of pods' sidecars by the pod meter (for the autoscaler), by result.",
            ["result"], registry=r)
        for result in SCRAPE_RESULTS:
            self.pod_scrapes.labels(result)
        self.node_registered = Gauge(
            "meshlet_agent_node_registered",
            "1 once this agent's node is registered with the server.", registry=r)
        r.register(WorkloadCollector(states))

    def __repr__(self) -> str:
        return f"<AgentMetrics services={sorted(self.services)}>"

    def workload(self, service: str) -> None:
        """A workload of ``service`` runs here: its series exist from now on, at 0."""
        self.services.add(service)
        self.restarts.labels(service)
        for result in CHECK_RESULTS:
            self.health_checks.labels(service, result)

    def checked(self, service: str, ok: bool) -> None:
        self.health_checks.labels(service, CHECK_RESULTS[0 if ok else 1]).inc()

    def restarted(self, service: str) -> None:
        self.restarts.labels(service).inc()

    def report_failed(self, report: str) -> None:
        assert report in REPORTS, report
        self.report_failures.labels(report).inc()

    def scraped(self, ok: bool) -> None:
        self.pod_scrapes.labels(SCRAPE_RESULTS[0 if ok else 1]).inc()

"""Runs the replicas of Deployments (pods) that the control plane placed on this node.

A watch on this node's pods drives a reconcile: a pod that appears is started as a
workload (its sidecar, its image under runc in a namespace of its own on the pods'
overlay network, its catalog entry under the Service that selects it), and one that
disappears is stopped (deregistered first, its inbound drained, then stopped). What
the agent sees is reported back: the phase, whether it is ready (its readiness probe),
how often it restarted and the address of its sidecar. A liveness probe that fails
``failureThreshold`` times in a row restarts the app, as the kubelet does.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from functools import partial
from typing import Any

from meshlet.agent import probes
from meshlet.agent.health import HealthTracker
from meshlet.agent.pod_meter import PERIOD as METER_PERIOD
from meshlet.agent.pod_meter import PodMeter
from meshlet.agent.retry import answered
from meshlet.agent.workload import Workload
from meshlet.agent.workload_host import WorkloadHost
from meshlet.backoff import Backoff
from meshlet.deploy.manifest import CheckSpec, ServiceSpec
from meshlet.errors import Conflict, MeshletError, NotFound
from meshlet.runtime.runc import stop_process

log = logging.getLogger(__name__)
PODS_NETWORK = "pods"   # the overlay every pod has its address on
WATCH_WAIT = 30.0
STOP_GRACE = 10.0


def readiness_check(probe: dict[str, Any] | None) -> CheckSpec | None:
    """The workload's health check for a readiness probe (None: ready once running)."""
    if probe is None:
        return None
    return CheckSpec(http=probe.get("http"), tcp=bool(probe.get("tcp")),
                     interval=probe["period"], timeout=probe["timeout"],
                     healthy_threshold=probe["success_threshold"],
                     unhealthy_threshold=probe["failure_threshold"])


def pod_spec(container: dict[str, Any], network: str) -> ServiceSpec:
    """The up-file service a pod's container amounts to: its image with ``args`` as the
    image's arguments, its environment, port, limits and readiness."""
    return ServiceSpec(image=container["image"], command=list(container.get("args") or []),
                       env=dict(container.get("env") or {}), port=container.get("port"),
                       memory=container.get("memory") or None,
                       cpus=container.get("cpus") or None, network=network,
                       check=readiness_check(container.get("readiness")))


class PodWorkload(Workload):
    """A workload named as its pod, with Kubernetes' probes."""

    def __init__(self, host: WorkloadHost, pod: dict[str, Any], network: str) -> None:
        container = pod["container"]
        super().__init__(host, pod["service"] or pod["deployment"], 0,
                         pod_spec(container, network), host.data_dir,
                         {}, instance_id=pod["name"])
        self.pod = pod
        self.entrypoint = list(container.get("command") or [])
        self.readiness: dict[str, Any] | None = container.get("readiness")
        self.liveness: dict[str, Any] | None = container.get("liveness")
        self.changed = asyncio.Event()  # something the pod's report shows changed
        self.measures: dict[str, float | None] = {}  # for the autoscaler (pod_meter)

    @property
    def probing(self) -> bool:
        return self.readiness is not None or self.liveness is not None

    async def check_loop(self) -> None:
        await asyncio.gather(*(loop for loop in (
            self.probe_loop(self.readiness, self.readiness_result) if self.readiness else None,
            self.probe_loop(self.liveness, self.liveness_result) if self.liveness else None,
        ) if loop is not None))

    async def probe_loop(self, probe: dict[str, Any], result: Any) -> None:
        await asyncio.sleep(probe.get("initial_delay", 0.0))  # a delay the probe asks for
        tracker = HealthTracker(probe["success_threshold"], probe["failure_threshold"],
                                status="passing" if result == self.liveness_result
                                else "critical")
        while True:
            ok, output = await self.probe(probe)
            self.host.metrics.checked(self.service, ok)
            if tracker.record(ok):
                await result(tracker.status, output)
            await asyncio.sleep(probe["period"])

    async def probe(self, probe: dict[str, Any]) -> tuple[bool, str]:
        port = int(probe.get("port") or self.app_port)
        timeout = float(probe["timeout"])
        if probe.get("http") is not None:
            return await probes.http_probe(self.host.http, self.app_host, port,
                                           probe["http"], timeout)
        return await probes.tcp_probe(self.app_host, port, timeout)

    async def readiness_result(self, status: str, output: str) -> None:
        self.set_status(status, f"readiness: {output}")

    async def liveness_result(self, status: str, output: str) -> None:
        if status == "critical" and self.app is not None:
            log.info("%s: liveness probe failed (%s); restarting it", self.id, output)
            self.set_status("critical", f"liveness probe failed: {output}")
            await stop_process(self.app, float(self.pod.get("stop_timeout", 10)))

    def set_status(self, status: str, output: str) -> None:
        super().set_status(status, output)
        self.changed.set()

    def report(self) -> dict[str, Any]:
        """What the control plane is told of this pod now."""
        running = self.pid is not None and self.inbound_port != 0
        return {"phase": "running" if running else "pending",
                "ready": running and self.status == "passing",
                "restarts": self.restarts, "detail": self.output[:500],
                "pid": self.pid if running else None,
                "address": f"{self.app_host}:{self.inbound_port}" if running else "",
                "metrics": self.measures if running else {}}


class PodRunner:
    """This node's pods, as the control plane places them (``host`` is the agent)."""

    def __init__(self, host: Any, node: str, network: str = PODS_NETWORK) -> None:
        self.host = host
        self.client = host.client
        self.node = node
        self.network = network
        self.running: dict[str, PodWorkload] = {}
        self.reporters: dict[str, asyncio.Task[None]] = {}
        self.stopping: dict[str, asyncio.Task[None]] = {}
        self.task: asyncio.Task[None] | None = None
        self.meter_task: asyncio.Task[None] | None = None
        self.meter = PodMeter(host.metrics.scraped)
        self.network_ready = False

    def __repr__(self) -> str:
        return f"<PodRunner {self.node} {sorted(self.running)}>"

    def start(self) -> None:
        if self.task is None:
            self.task = asyncio.get_running_loop().create_task(self.watch())
            self.meter_task = asyncio.get_running_loop().create_task(self.meter_loop())

    async def watch(self) -> None:
        index = 0
        while True:
            pods, new_index = await answered(
                "pods watch failed; keeping this node's pods as they are",
                partial(self.client.pods, node=self.node, index=index or None,
                        wait=WATCH_WAIT))
            index = 0 if new_index < index else new_index
            await self.reconcile({p["name"]: p for p in pods if p["node"] == self.node})

    async def meter_loop(self) -> None:
        """Measure each running pod every METER_PERIOD; a change goes in its report."""
        while True:
            await asyncio.sleep(METER_PERIOD)
            running = list(self.running.items())  # at once: a slow sidecar delays none
            found = await asyncio.gather(*(self.meter.measure(
                self.host.http, name, workload.metrics_url, workload.app,
                workload.spec.cpus) for name, workload in running))
            for (_, workload), measures in zip(running, found, strict=True):
                if measures is not None and measures != workload.measures:
                    workload.measures = measures
                    workload.changed.set()
            for name in set(self.meter.last) - set(self.running):
                self.meter.forget(name)

    async def reconcile(self, wanted: dict[str, dict[str, Any]]) -> None:
        """Start new pods; stop those gone or terminating (a terminating pod is deleted
        once stopped: the control plane then knows it no longer runs)."""
        for name in [n for n in self.running
                     if n not in wanted or wanted[n]["phase"] == "terminating"]:
            self.begin_stop(name, delete=name in wanted)
        for name, pod in sorted(wanted.items()):
            if name in self.running or name in self.stopping:
                continue
            if pod["phase"] == "terminating":  # stopped before (an earlier run of ours)
                await self.delete(name)
            else:
                await self.launch(pod)

    async def delete(self, name: str) -> None:
        try:
            await self.client.pod_delete(name)
        except NotFound:
            pass
        except MeshletError as exc:  # the next change of the pods tries again
            log.warning("pod %s: stopped, but cannot delete it yet: %s", name, exc)

    async def ensure_network(self) -> None:
        """The pods' overlay, made by the first agent that needs it."""
        if self.network_ready:
            return
        try:
            await self.client.network(self.network)
        except NotFound:
            with contextlib.suppress(Conflict):
                await self.client.network_create(self.network, driver="overlay")
        self.network_ready = True

    async def launch(self, pod: dict[str, Any]) -> None:
        try:
            await self.ensure_network()
        except MeshletError as exc:
            log.warning("pod %s: cannot make network %s yet: %s", pod["name"], self.network,
                        exc)
            return
        self.host.start_host()
        workload = PodWorkload(self.host, pod, self.network)
        self.running[pod["name"]] = workload
        self.host.workloads.append(workload)
        workload.start()
        self.reporters[pod["name"]] = asyncio.get_running_loop().create_task(
            self.reporter(workload))
        log.info("pod %s: starting (%s)", pod["name"], pod["container"]["image"])

    async def reporter(self, workload: PodWorkload) -> None:
        """Tell the control plane each change in the pod's report, retrying until told."""
        backoff = Backoff()
        last: dict[str, Any] | None = None
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(workload.changed.wait(), WATCH_WAIT)
            workload.changed.clear()
            if workload.stopping.is_set():  # (see Workload.reporter: a swallowed cancel)
                return
            report = workload.report()
            if report == last:
                continue
            try:
                await self.client.pod_report(workload.id, **report)
                last = report
                backoff.reset()
            except NotFound:
                return  # deleted meanwhile: the watch stops it
            except MeshletError as exc:
                self.host.metrics.report_failed("pod")
                log.warning("pod %s: cannot report (%s); retrying", workload.id, exc)
                await asyncio.sleep(backoff.next_delay())
                workload.changed.set()

    def begin_stop(self, name: str, delete: bool = False) -> None:
        workload = self.running.pop(name)
        reporter = self.reporters.pop(name, None)
        if reporter is not None:
            reporter.cancel()
        task = asyncio.get_running_loop().create_task(self.finish_stop(workload, delete))
        self.stopping[name] = task

    async def finish_stop(self, workload: PodWorkload, delete: bool) -> None:
        try:
            await workload.stop(float(workload.pod.get("stop_timeout", STOP_GRACE)))
        finally:
            with contextlib.suppress(ValueError):
                self.host.workloads.remove(workload)
            self.stopping.pop(workload.id, None)
            log.info("pod %s: stopped", workload.id)
        if delete:
            await self.delete(workload.id)

    async def stop(self) -> None:
        """Stop every pod of this node (the agent is stopping), concurrently."""
        for task in (self.task, self.meter_task):
            if task is not None:
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)
        self.task = self.meter_task = None
        for name in list(self.running):
            self.begin_stop(name)
        await asyncio.gather(*self.stopping.values(), return_exceptions=True)

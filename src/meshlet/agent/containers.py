"""Runs this node's containers (`meshlet run`) as the control plane describes them.

A watch on the containers drives a reconcile: start what should run and does not,
stop what should not, join or leave networks, and clean up after containers that are
gone. A container on its own network gets a sandbox from ``HostNetworks``: the
namespace ``ml-<node tag>-<name>`` with an interface on each network's bridge and the
embedded DNS; its process runs there through `ip netns exec`, which also gives it
``/etc/netns/<ns>/resolv.conf``. What the agent sees (running with a pid, exited with a
code, failed with a reason) is reported back. Reconciling waits until the host's
networks have removed what an earlier run left (``HostNetworks.ready``), then starts
again what should run (if that removal failed, a container on its own network is
reported failed, with the reason).

A container with an ``image`` runs under runc (``ImageRunner``) in that namespace,
with its own rootfs, PID, mount, UTS and IPC namespaces. Either kind is started
again after it exits as its restart policy says, with a growing delay that a stable
run forgives; one stopped by a user never is.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

from meshlet.agent.backoff import RestartBackoff
from meshlet.agent.host_networks import HostNetworks
from meshlet.agent.image_runner import ImageRunner
from meshlet.agent.network_plan import Network
from meshlet.agent.retry import answered
from meshlet.api.client import Client
from meshlet.errors import MeshletError
from meshlet.net import netns
from meshlet.net.ports import PortForwarder
from meshlet.private_files import private_dir
from meshlet.processes import spawn
from meshlet.restart_policy import parse_restart
from meshlet.runtime.runc import ContainerProcess, stop_process
from meshlet.state.containers import parse_port

Process = asyncio.subprocess.Process | ContainerProcess

log = logging.getLogger(__name__)


def exit_status(code: int) -> int:
    """As a shell reports it: 128 + N for a process killed by signal N."""
    return 128 - code if code < 0 else code


def addressed(spec: Mapping[str, Any]) -> dict[str, str]:
    """The networks a container has an address on (network -> address), in the order
    it names them: those it gets an interface on."""
    return {n: spec["addresses"][n] for n in spec["networks"] if n in spec["addresses"]}


@dataclass
class Running:
    """A container this agent started, and what it set up for it."""

    name: str
    namespace: str | None
    spec: dict[str, Any] = field(default_factory=dict)
    process: Process | None = None
    forwarders: list[PortForwarder] = field(default_factory=list)
    waiter: asyncio.Task[None] | None = None
    stopping: bool = False
    restarts: int = 0
    backoff: RestartBackoff = field(default_factory=lambda: RestartBackoff(base=0.1))
    stopped: asyncio.Event = field(default_factory=asyncio.Event)

    @property
    def image(self) -> bool:
        return bool(self.spec.get("image"))


class ContainerRunner:
    def __init__(self, client: Client, node: str, data_dir: Path,
                 host: HostNetworks, images_dir: Path | None = None) -> None:
        self.client = client
        self.node = node
        self.host = host
        self.dir = data_dir / "containers"
        self.running: dict[str, Running] = {}
        self.task: asyncio.Task[None] | None = None
        self.lock = asyncio.Lock()
        self.images = ImageRunner(images_dir or data_dir / "images", node, host.prefix)

    def __repr__(self) -> str:
        return f"<ContainerRunner {self.node} running={sorted(self.running)}>"

    def start(self) -> None:
        self.task = asyncio.get_running_loop().create_task(self.watch())

    async def watch(self) -> None:
        await self.host.ready.wait()
        try:
            await self.images.sweep(self.dir)
        except OSError as exc:
            log.warning("could not remove containers left by an earlier run: %s", exc)
        index: int | None = None  # None: answer now; then block past the index (even 0)
        while True:
            found, index = await answered(
                "watching containers", partial(self.client.containers, None, index))
            async with self.lock:
                try:
                    self.host.view.set_containers(found)
                    await self.reconcile({c["name"]: c for c in found
                                          if c["node"] == self.node})
                    await self.host.program_overlays()
                except Exception:  # a bug here must not stop every container's care
                    log.exception("reconciling containers failed; retrying")
                    await asyncio.sleep(1.0)
                    index = None

    async def reconcile(self, wanted: dict[str, dict[str, Any]]) -> None:
        for name in [n for n in self.running if n not in wanted]:
            await self.remove(name)
        for name, spec in wanted.items():
            run = self.running.get(name)
            alive = run is not None and run.process is not None \
                and run.process.returncode is None
            if spec["desired"] == "running" and not alive:
                if run is None and (spec["status"] in ("created", "running", "restarting")
                                    or parse_restart(spec["restart"]).name == "always"):
                    await self.launch(spec)
            elif spec["desired"] == "stopped" and run is not None and not run.stopping \
                    and (alive or (run.waiter is not None and not run.waiter.done())):
                await self.halt(run)  # running, or waiting to restart
            elif alive and run is not None and \
                    self.host.networks_of(name) != spec["networks"]:
                await self.rewire(run, spec)

    async def networks(self) -> dict[str, Network]:
        """Every network's record, fetched now (the view keeps them too)."""
        found = await self.client.networks()
        self.host.view.set_networks(found)
        return {n["name"]: Network.from_record(n) for n in found}

    async def launch(self, spec: dict[str, Any]) -> None:
        name = spec["name"]
        addresses = addressed(spec)
        namespace = self.host.prefix + name if addresses or spec["networks"] == ["none"] \
            else None
        run = Running(name, namespace, spec)
        self.running[name] = run
        try:
            if namespace is not None:
                netns.require_root(f"container {name!r} on its own network")
                view = self.host.view
                await self.host.open(name, namespace, addresses, await self.networks(),
                                     lambda: view.containers.get(name))
            await self.start_process(run)
            target = next(iter(spec["addresses"].values()), None)
            for text in spec["ports"]:
                port = parse_port(text)
                assert target is not None  # the control plane checked it
                forwarder = PortForwarder(port.host_ip, port.host_port, target, port.port)
                await forwarder.start()
                run.forwarders.append(forwarder)
        except (MeshletError, OSError) as exc:
            log.warning("container %s failed to start: %s", name, exc)
            await self.teardown(run, keep_record=True)
            await self.report(name, status="failed", detail=str(exc),
                              log=str(self.log_path(name)))
            return
        await self.report_running(run)  # before the waiter can report its exit
        run.waiter = asyncio.get_running_loop().create_task(self.wait_exit(run))

    def log_path(self, name: str) -> Path:
        return self.dir / f"{name}.log"

    async def start_process(self, run: Running) -> None:
        """Start the container's process (again, on a restart); raises MeshletError,
        OSError."""
        spec, workdir = run.spec, self.dir / run.name
        private_dir(workdir)
        if run.image:
            run.process = await self.images.start(
                spec, workdir, run.namespace, list(addressed(spec).values()),
                self.log_path(run.name))
            return
        argv = list(spec["command"])
        if run.namespace is not None:
            argv = ["ip", "netns", "exec", run.namespace, *argv]
        run.process = await spawn(argv, {**os.environ, **spec["env"]}, workdir,
                                  self.log_path(run.name))

    async def report_running(self, run: Running) -> None:
        process = run.process
        assert process is not None
        pid = await self.images.pid_of(process) if isinstance(process, ContainerProcess) \
            else process.pid
        await self.report(run.name, status="running", pid=pid,
                          namespace=run.namespace or "", log=str(self.log_path(run.name)),
                          restart_count=run.restarts)

    async def rewire(self, run: Running, spec: dict[str, Any]) -> None:
        """Attach the networks the spec names and detach the others."""
        if run.namespace is not None:
            await self.host.connect(run.name, addressed(spec), await self.networks())

    async def wait_exit(self, run: Running) -> None:
        """Wait for the process; start it again while the restart policy says so."""
        policy = parse_restart(run.spec["restart"])
        loop = asyncio.get_running_loop()
        while True:
            assert run.process is not None
            started = loop.time()
            code = exit_status(await run.process.wait())
            if isinstance(run.process, ContainerProcess):
                await asyncio.to_thread(self.images.release, self.dir / run.name)
            if run.stopping:
                return
            if not policy.should_restart(code, run.restarts):
                break
            run.restarts += 1
            delay = run.backoff.next_delay(loop.time() - started)
            await self.report(run.name, status="restarting", exit_code=code,
                              namespace=run.namespace or "",
                              log=str(self.log_path(run.name)),
                              restart_count=run.restarts,
                              detail=f"exited with {code}; restart {run.restarts} in "
                                     f"{delay:.1f}s")
            try:
                await asyncio.wait_for(run.stopped.wait(), delay)
                return  # stopped or removed meanwhile
            except TimeoutError:
                pass
            try:
                await self.start_process(run)
            except (MeshletError, OSError) as exc:
                log.warning("container %s failed to restart: %s", run.name, exc)
                for forwarder in run.forwarders:
                    await forwarder.stop()
                run.forwarders.clear()
                await self.report(run.name, status="failed", detail=str(exc),
                                  log=str(self.log_path(run.name)),
                                  restart_count=run.restarts)
                return
            if run.stopping:  # stopped while it was starting again
                await stop_process(run.process, self.grace(run))
                return
            await self.report_running(run)
        for forwarder in run.forwarders:
            await forwarder.stop()
        run.forwarders.clear()
        await self.report(run.name, status="exited", exit_code=code,
                          namespace=run.namespace or "", log=str(self.log_path(run.name)),
                          restart_count=run.restarts)

    def grace(self, run: Running) -> float:
        found = self.host.view.containers.get(run.name) or run.spec
        return float(found.get("stop_timeout", 10))

    async def halt(self, run: Running) -> None:
        run.stopping = True
        run.stopped.set()
        code = exit_status(await stop_process(run.process, self.grace(run))) \
            if run.process is not None else None
        if run.waiter is not None:
            await run.waiter
        await self.report(run.name, status="exited", exit_code=code,
                          namespace=run.namespace or "",
                          log=str(self.log_path(run.name)), restart_count=run.restarts)

    async def remove(self, name: str) -> None:
        """A removed container is killed at once, as `docker rm -f` kills it."""
        run = self.running.pop(name)
        await self.teardown(run, keep_record=False, grace=0.0)

    async def teardown(self, run: Running, keep_record: bool,
                       grace: float | None = None) -> None:
        """Stop the process (SIGKILL after ``grace``, default its stop timeout) and
        forwarders; remove the sandbox."""
        run.stopping = True
        run.stopped.set()
        if run.process is not None and run.process.returncode is None:
            await stop_process(run.process, self.grace(run) if grace is None else grace)
        if run.image:
            await asyncio.to_thread(self.images.release, self.dir / run.name)
        if run.waiter is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await run.waiter
        for forwarder in run.forwarders:
            await forwarder.stop()
        if run.namespace is not None:
            await self.host.close(run.name)
        if not keep_record:
            self.log_path(run.name).unlink(missing_ok=True)
            await asyncio.to_thread(self.images.remove, self.dir / run.name)
        else:
            self.running.pop(run.name, None)

    async def report(self, name: str, **status: Any) -> None:
        try:
            await self.client.container_report(name, **status)
        except MeshletError as exc:
            log.info("could not report %s for %s: %s", status.get("status"), name, exc)

    async def stop(self) -> None:
        """Stop every container and remove what was set up for it (agent shutdown), all
        at once: each may take its whole grace period."""
        async with self.lock:  # let a reconcile in progress finish its work first
            if self.task is not None:
                self.task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await self.task
            runs = [self.running.pop(name) for name in list(self.running)]
            await asyncio.gather(*(self.teardown(run, keep_record=True) for run in runs))
            self.images.close()

"""One running instance of a service: its sidecar, its app, its health, its catalog entry.

Start order: sidecar, wait until it is ready with its first config, register, then the
app. Stop order: deregister, drain the sidecar's inbound listener and let in-flight
requests finish, stop the app, stop the sidecar last.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import sys
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import aiohttp

from meshlet.agent import probes
from meshlet.agent.app_ports import free_app_port
from meshlet.agent.backoff import RestartBackoff
from meshlet.agent.health import HealthTracker
from meshlet.agent.sidecar_config import LOOPBACK, bootstrap_snapshot, namespaced_bootstrap
from meshlet.agent.workload_host import Sandbox, WorkloadHost
from meshlet.backoff import Backoff
from meshlet.deploy.manifest import ServiceSpec
from meshlet.errors import ConfigError, MeshletError, NotFound, Unavailable
from meshlet.private_files import write_private
from meshlet.processes import spawn, terminate
from meshlet.proxy.admin_socket import socket_address
from meshlet.runtime.runc import ContainerProcess, stop_process

log = logging.getLogger(__name__)
SIDECAR_START_TIMEOUT = 15.0
IDENTITY_TIMEOUT = 30.0  # for the workload's first certificate
RESYNC_INTERVAL = 10.0
NAMESPACE_APP_PORT = 80   # where an app in its own namespace listens unless `port` says
UPSTREAM_VIP_TIMEOUT = 30.0
ADMIN = "http://sidecar"  # any host: the admin session's connector is the Unix socket


@dataclass(frozen=True)
class Ended:
    """Why a run of the app ended, and how long it had been up."""

    reason: str
    ran_for: float
    sidecar: bool = False


def env_name(service: str) -> str:
    return service.upper().replace("-", "_")


class Workload:
    """Driven by its ``host`` (the agent), through the narrow ``WorkloadHost``."""

    def __init__(self, host: WorkloadHost, service: str, replica: int, spec: ServiceSpec,
                 cwd: Path, upstream_protocols: Mapping[str, str],
                 instance_id: str | None = None) -> None:
        """``instance_id``: its name in the catalog (default ``SERVICE-REPLICA``; a
        Deployment's replica is its pod's name)."""
        self.host = host
        self.service = service
        self.replica = replica
        self.spec = spec
        self.cwd = cwd
        self.id = instance_id or f"{service}-{replica}"
        self.entrypoint: list[str] = []  # an image's, replaced (a pod's ``command``)
        self.upstream_protocols = [(u, upstream_protocols.get(u, "http"))
                                   for u in spec.upstreams]
        if spec.in_namespace:  # an address of its own: every replica on the same port
            self.app_port = spec.port or NAMESPACE_APP_PORT
        else:
            self.app_port = spec.port + replica if spec.port else free_app_port(LOOPBACK)
        self.bootstrap = bootstrap_snapshot(
            service, self.id, spec.protocol, self.app_port, self.upstream_protocols,
            host.zone, host.node)
        self.sandbox: Sandbox | None = None
        self.upstream_ends: dict[str, tuple[str, int]] = {}  # upstream -> (VIP, port)
        self._admin_http: aiohttp.ClientSession | None = None
        self._admin_dir: int | None = None  # a handle that keeps a long socket path short
        self.run_dir = host.data_dir / "workloads" / self.id
        self.status = "critical"
        self.output = "starting"
        self.restarts = 0
        self.pid: int | None = None
        self.ports: dict[str, int] = {}
        self.admin_url = ""     # unix:PATH of the sidecar's admin socket, once it runs
        self.metrics_url = ""   # http://HOST:PORT of its read-only metrics listener
        self.app: asyncio.subprocess.Process | ContainerProcess | None = None
        self.sidecar: asyncio.subprocess.Process | None = None
        self.started = asyncio.Event()
        self.stopping = asyncio.Event()
        self.registered = False
        self.report_needed = asyncio.Event()
        self.tasks: list[asyncio.Task[None]] = []
        self.tracker = (HealthTracker(spec.check.healthy_threshold,
                                      spec.check.unhealthy_threshold)
                        if spec.check else None)
        # Its key, certificate and trust bundle (``agent/identity.py``), in a directory
        # of its own; the sidecar's TLS loads them from ``identity.paths()``.
        self.identity = host.identity(service, self.run_dir / "identity")
        self.pushes: set[asyncio.Task[None]] = set()  # pushes of a renewed certificate
        host.metrics.workload(service)

    def __repr__(self) -> str:
        return (f"<Workload {self.id} {self.status} restarts={self.restarts} "
                f"pid={self.pid} port={self.inbound_port}>")

    @property
    def inbound_port(self) -> int:
        return self.ports.get(f"inbound:{self.service}", 0)

    def outbound_port(self, upstream: str) -> int:
        return self.ports.get(f"outbound:{upstream}", 0)

    def start(self) -> None:
        loop = asyncio.get_running_loop()
        self.tasks = [loop.create_task(self.run()), loop.create_task(self.reporter())]
        if self.identity is not None:
            self.tasks.append(loop.create_task(self.identity.run()))

    # -- main loop ----------------------------------------------------------------------

    async def run(self) -> None:
        backoff = RestartBackoff()
        while not self.stopping.is_set():
            try:
                if self.spec.in_namespace and self.sandbox is None:
                    await self.open_sandbox()
                await self.start_sidecar()
            except MeshletError as exc:
                self.set_status("critical", str(exc))
                log.error("%s: %s", self.id, exc)
                if await self.pause(backoff.next_delay(0)):
                    return
                continue
            while not self.stopping.is_set():
                ended = await self.run_app_once()
                if ended is None or self.stopping.is_set():
                    return
                self.restarts += 1
                self.host.metrics.restarted(self.service)
                if ended.sidecar:
                    self.set_status("critical", "sidecar exited; restarting it")
                    if self.app is not None:
                        await stop_process(self.app, 2.0)
                    break
                delay = backoff.next_delay(ended.ran_for)
                self.set_status("critical", f"{ended.reason}; restart "
                                            f"{self.restarts} in {delay:.1f}s")
                if await self.pause(delay):
                    return

    async def pause(self, seconds: float) -> bool:
        """Sleep unless stopping; True if asked to stop meanwhile."""
        try:
            await asyncio.wait_for(self.stopping.wait(), seconds)
            return True
        except TimeoutError:
            return False

    async def run_app_once(self) -> Ended | None:
        """Run the app until it or the sidecar exits; None if asked to stop."""
        loop = asyncio.get_running_loop()
        try:
            self.app = await self.start_app()
        except OSError as exc:
            return Ended(f"cannot start {(self.spec.command or [''])[0]}: {exc.strerror}",
                         0.0)
        except MeshletError as exc:
            return Ended(f"cannot start {self.spec.image}: {exc}", 0.0)
        started_at = loop.time()
        self.pid = self.app.pid
        if self.tracker is not None:
            self.tracker.reset()
            self.set_status("critical", "waiting for the first health check")
        else:
            self.set_status("passing", "process running")
        self.started.set()
        checker = loop.create_task(self.check_loop()) if self.probing else None
        waits = {loop.create_task(self.app.wait()): "app",
                 loop.create_task(self.sidecar.wait()): "sidecar",  # type: ignore[union-attr]
                 loop.create_task(self.stopping.wait()): "stop"}
        done, pending = await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
        for task in pending:
            task.cancel()
        if checker is not None:
            checker.cancel()
        which = {waits[t] for t in done}
        if "stop" in which:
            return None
        if "sidecar" in which:
            return Ended("sidecar exited", loop.time() - started_at, sidecar=True)
        return Ended(f"process exited with code {self.app.returncode}",
                     loop.time() - started_at)

    @property
    def probing(self) -> bool:
        """Whether probes run while the app does."""
        return self.spec.check is not None

    async def start_app(self) -> asyncio.subprocess.Process | ContainerProcess:
        """The app's process: the command, or the image under runc in the workload's
        namespace (its environment is then only the image's and the workload's)."""
        if self.spec.image is None:
            return await spawn(self.wrap(self.spec.command), self.app_env(dict(os.environ)),
                               self.cwd, self.run_dir / "app.log")
        record = {"name": f"svc.{self.id}", "hostname": self.id, "image": self.spec.image,
                  "image_id": "", "command": list(self.spec.command),
                  "entrypoint": list(self.entrypoint),
                  "user": "", "workdir": "", "env": self.app_env({}),
                  "memory": self.spec.memory or 0, "cpus": self.spec.cpus or 0.0}
        return await self.host.start_image(
            record, self.run_dir / "container",
            self.sandbox.namespace if self.sandbox else None,
            [self.sandbox.address] if self.sandbox else [], self.run_dir / "app.log")

    def app_env(self, base: dict[str, str]) -> dict[str, str]:
        """In its own namespace the app listens on the workload's address (its sidecar
        and health checks reach it there) and finds an upstream by name: ``catalog:80``."""
        env = base
        env.update({"PORT": str(self.app_port), "HOST": self.app_host,
                    "MESHLET_SERVICE": self.service, "MESHLET_INSTANCE": self.id,
                    "PYTHONUNBUFFERED": "1"})
        for upstream in self.spec.upstreams:
            env[f"MESHLET_UPSTREAM_{env_name(upstream)}"] = (
                f"{upstream}:{self.upstream_ends[upstream][1]}" if self.sandbox
                else f"{LOOPBACK}:{self.outbound_port(upstream)}")
        env.update(self.spec.env)
        return env

    def wrap(self, argv: list[str]) -> list[str]:
        return self.sandbox.wrap(argv) if self.sandbox else argv

    @property
    def app_host(self) -> str:
        """Where the agent reaches the app (health checks)."""
        return self.sandbox.address if self.sandbox else LOOPBACK

    # -- namespace ----------------------------------------------------------------------

    async def open_sandbox(self) -> None:
        """Its own namespace on the service's network, with the upstreams' virtual IPs
        on its loopback for the sidecar to listen on."""
        assert self.spec.network is not None
        self.upstream_ends = await self.host.upstream_ends(self.spec.upstreams,
                                                           UPSTREAM_VIP_TIMEOUT)
        box = await self.host.open_sandbox(
            self.id, self.spec.network, sorted({vip for vip, _ in self.upstream_ends.values()}))
        self.sandbox = box
        self.bootstrap = namespaced_bootstrap(
            self.service, self.id, self.spec.protocol, self.app_port, box.address,
            [(u, proto, *self.upstream_ends[u]) for u, proto in self.upstream_protocols],
            self.host.zone, self.host.node)

    # -- sidecar ------------------------------------------------------------------------

    @property
    def admin_socket(self) -> Path:
        return self.run_dir / "admin.sock"

    def make_run_dir(self) -> None:
        """The workload's directory, 0700: it holds the sidecar's admin socket, which
        must be out of other users' reach (and their power to replace it)."""
        workloads = self.run_dir.parent
        workloads.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        for path in (workloads, self.run_dir):
            path.mkdir(mode=0o700, exist_ok=True)
        for path in (workloads, self.run_dir):
            os.chmod(path, 0o700)  # mkdir's mode is masked, and the directory may be old

    async def with_identity(self) -> None:
        """With a cluster CA: wait for the workload's first certificate and name it in
        the sidecar's bootstrap, so it speaks mutual TLS from its first connection;
        each renewal is pushed to it after."""
        if self.identity is None:
            return
        try:
            await asyncio.wait_for(self.identity.ready.wait(), IDENTITY_TIMEOUT)
        except TimeoutError:
            raise Unavailable(f"{self.id}: no certificate from the cluster CA after "
                              f"{IDENTITY_TIMEOUT:.0f}s; see the agent's log") from None
        self.bootstrap = replace(self.bootstrap, tls=self.identity.tls())
        self.identity.on_change = self.certificate_changed

    def certificate_changed(self) -> None:
        if self.identity is None or self.bootstrap.tls is None:
            return
        try:
            self.bootstrap = replace(self.bootstrap, tls=self.identity.tls())
        except (ConfigError, OSError) as exc:
            log.warning("%s: renewed certificate not readable yet: %s", self.id, exc)
            return
        task = asyncio.get_running_loop().create_task(self.push())
        self.pushes.add(task)
        task.add_done_callback(self.pushes.discard)

    async def start_sidecar(self) -> None:
        """Start the sidecar, push its first config and wait until it is ready. Its
        admin API is a Unix socket (0600) in the workload's directory (0700), always;
        metrics are served read-only on TCP where the agent reaches the app."""
        await self.with_identity()
        self.make_run_dir()
        bootstrap_path = self.run_dir / "bootstrap.json"
        port_file = self.run_dir / "sidecar.ports"
        port_file.unlink(missing_ok=True)
        boot = self.host.guarded(self.bootstrap)
        write_private(bootstrap_path, json.dumps(boot.to_dict()))  # 0600
        argv = [sys.executable, "-m", "meshlet", "proxy", "--bootstrap", str(bootstrap_path),
                "--admin", f"unix:{self.admin_socket}", "--metrics", f"{self.app_host}:0",
                "--port-file", str(port_file)]
        try:
            self.sidecar = await spawn(self.wrap(argv), dict(os.environ), self.cwd,
                                       self.run_dir / "sidecar.log")
        except OSError as exc:
            raise Unavailable(f"cannot start sidecar for {self.id}: {exc.strerror}") from None
        loop = asyncio.get_running_loop()
        deadline = loop.time() + SIDECAR_START_TIMEOUT
        while not port_file.exists():
            if self.sidecar.returncode is not None or loop.time() > deadline:
                await terminate(self.sidecar, 1.0)
                raise Unavailable(f"sidecar for {self.id} did not start; see "
                                  f"{self.run_dir / 'sidecar.log'}")
            await asyncio.sleep(0.01)
        info = json.loads(port_file.read_text())
        self.ports = info["listeners"]
        self.admin_url = info["admin"]
        self.metrics_url = f"http://{self.app_host}:{info['metrics']}"
        await self.push()
        while not await self.sidecar_ready():
            if self.sidecar.returncode is not None or loop.time() > deadline:
                await terminate(self.sidecar, 1.0)
                raise Unavailable(f"sidecar for {self.id} never became ready")
            await self.push()
            await asyncio.sleep(0.02)
        self.registered = False
        self.report_needed.set()

    @property
    def admin_http(self) -> aiohttp.ClientSession:
        """The session that reaches the sidecar's admin API, over its Unix socket."""
        if self._admin_http is None:
            address, self._admin_dir = socket_address(str(self.admin_socket))
            self._admin_http = aiohttp.ClientSession(
                connector=aiohttp.UnixConnector(address))
        return self._admin_http

    async def sidecar_ready(self) -> bool:
        try:
            async with self.admin_http.get(f"{ADMIN}/ready",
                                           timeout=aiohttp.ClientTimeout(total=2)) as resp:
                return resp.status == 200
        except (TimeoutError, aiohttp.ClientError, OSError):
            return False

    async def push(self) -> None:
        """Push the config the host says the sidecar should run now."""
        if self.admin_url:
            await self.push_config(self.host.snapshot(self.bootstrap).to_dict())

    async def push_config(self, body: dict[str, Any]) -> None:
        if not self.admin_url:
            return
        try:
            async with self.admin_http.put(f"{ADMIN}/config", json=body,
                                           timeout=aiohttp.ClientTimeout(total=5)) as resp:
                reply = await resp.read()
                if resp.status != 200:  # refused whole: the sidecar keeps its last config
                    log.warning("%s: sidecar refused config version %s: %s", self.id,
                                body.get("version"), reply[:500].decode(errors="replace"))
        except (TimeoutError, aiohttp.ClientError, OSError) as exc:
            log.debug("%s: config push failed: %s", self.id, exc)

    # -- health -------------------------------------------------------------------------

    async def check_loop(self) -> None:
        check = self.spec.check
        assert check is not None and self.tracker is not None
        while True:
            if check.kind == "http":
                ok, output = await probes.http_probe(self.host.http, self.app_host,
                                                     self.app_port, check.http or "/",
                                                     check.timeout)
            elif check.kind == "tcp":
                ok, output = await probes.tcp_probe(self.app_host, self.app_port,
                                                    check.timeout)
            else:
                app, argv = self.app, check.command or []
                # An image's probe runs inside its container, as a Kubernetes exec probe.
                argv = app.runc.exec_argv(app.id, argv) \
                    if isinstance(app, ContainerProcess) else self.wrap(argv)
                ok, output = await probes.command_probe(argv, self.app_env(dict(os.environ)),
                                                        str(self.cwd), check.timeout)
            self.host.metrics.checked(self.service, ok)
            if self.tracker.record(ok):
                self.set_status(self.tracker.status, output)
            await asyncio.sleep(check.interval)

    def set_status(self, status: str, output: str) -> None:
        if (status, output) != (self.status, self.output):
            log.info("%s: %s (%s)", self.id, status, output)
        self.status = status
        self.output = output
        self.report_needed.set()

    async def reporter(self) -> None:
        """Push registration and the latest health to the server; retry until it lands.

        A periodic resync repairs drift (a server that lost its data, say), as Consul's
        anti-entropy does: a 404 means the instance is unknown, so it registers again.
        """
        backoff = Backoff()
        while True:
            try:  # report on change, and every RESYNC seconds in case the server forgot
                await asyncio.wait_for(self.report_needed.wait(), RESYNC_INTERVAL)
            except TimeoutError:
                pass
            self.report_needed.clear()
            if self.stopping.is_set():
                # Python 3.11's wait_for can swallow a cancel that races the event it
                # waits on: a stopping workload's reporter ends here instead.
                return
            if not self.inbound_port:
                continue
            try:
                if not self.registered:
                    await self.register()
                await self.host.client.set_health(self.id, self.status, self.output,
                                                  self.restarts, self.pid)
                backoff.reset()
            except NotFound:
                self.registered = False
                self.report_needed.set()
            except MeshletError as exc:
                self.host.metrics.report_failed("instance")
                log.warning("%s: cannot report to server (%s); retrying", self.id, exc)
                await asyncio.sleep(backoff.next_delay())
                self.report_needed.set()

    async def register(self) -> None:
        spec = self.spec
        await self.host.client.register(
            id=self.id, service=self.service, address=self.app_host, port=self.inbound_port,
            tags=spec.tags, meta={**spec.meta, "app_port": str(self.app_port),
                                  "admin": self.admin_url, "metrics": self.metrics_url},
            weight=spec.weight, zone=self.host.zone, node=self.host.node,
            status=self.status)
        self.registered = True

    # -- stop ---------------------------------------------------------------------------

    async def stop(self, grace: float = 10.0) -> None:
        self.stopping.set()
        try:
            await asyncio.wait_for(self.host.client.deregister(self.id), 2.0)
        except (TimeoutError, MeshletError):
            pass
        await self.drain_inbound(grace)
        for task in self.tasks:
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)
        if self.app is not None:
            await stop_process(self.app, 5.0)
            if isinstance(self.app, ContainerProcess):
                self.host.release_image(self.run_dir / "container")
        if self.sidecar is not None:
            await terminate(self.sidecar, grace)
        if self._admin_http is not None:
            await self._admin_http.close()
        if self._admin_dir is not None:
            os.close(self._admin_dir)
            self._admin_dir = None
        if self.sandbox is not None:
            await self.host.close_sandbox(self.sandbox)
            self.sandbox = None

    async def drain_inbound(self, grace: float) -> None:
        if not self.admin_url or self.sidecar is None or self.sidecar.returncode is not None:
            return
        loop = asyncio.get_running_loop()
        deadline = loop.time() + grace
        try:
            async with self.admin_http.post(f"{ADMIN}/drain?direction=inbound",
                                            timeout=aiohttp.ClientTimeout(total=2)) as resp:
                body = await resp.json()
            while body.get("active_requests", 0) > 0 and loop.time() < deadline:
                await asyncio.sleep(0.05)
                async with self.admin_http.get(f"{ADMIN}/ready",
                                               timeout=aiohttp.ClientTimeout(total=2)) as resp:
                    body = await resp.json()
        except (TimeoutError, aiohttp.ClientError, OSError, ValueError):
            return


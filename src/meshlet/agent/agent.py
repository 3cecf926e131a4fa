"""The agent driver: starts workloads, watches the server, pushes sidecar configs.

Watches are blocking queries, one per upstream service plus one on config entries.
When the server is unreachable they back off and retry; sidecars keep the last
config they were given, so traffic keeps flowing on what was last known.

The agent is the composition root of its parts: one ``HostNetworks`` (the host side
of networks) that the container runner and the mesh workloads' sandboxes share, the
host's own watches, and the workloads, which reach it only through ``WorkloadHost``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Sequence
from dataclasses import replace
from functools import partial
from pathlib import Path
from typing import Any

import aiohttp

from meshlet.addresses import source_address_towards
from meshlet.agent.containers import ContainerRunner
from meshlet.agent.host_networks import HostNetworks
from meshlet.agent.host_watches import HostWatches
from meshlet.agent.identity import WorkloadIdentity
from meshlet.agent.ingress import SERVICE as INGRESS_SERVICE
from meshlet.agent.ingress import IngressGateway
from meshlet.agent.metrics_listener import MetricsListener
from meshlet.agent.pods import PodRunner, PodWorkload
from meshlet.agent.retry import answered
from meshlet.agent.roots_watch import RootsWatch
from meshlet.agent.sandboxes import Sandboxes
from meshlet.agent.service_gateways import ServiceGateways
from meshlet.agent.sidecar_config import build_snapshot, intentions_for
from meshlet.agent.workload import Workload
from meshlet.agent.workload_host import Sandbox
from meshlet.api.client import Client
from meshlet.deploy.manifest import Manifest
from meshlet.errors import Conflict, MeshletError, NotFound, Unavailable
from meshlet.net import netns
from meshlet.observe.agent_metrics import AgentMetrics
from meshlet.private_files import private_dir
from meshlet.proxy.config import Snapshot
from meshlet.runtime.runc import ContainerProcess

log = logging.getLogger(__name__)
WATCH_WAIT = 30.0


class Agent:
    """Implements ``WorkloadHost`` for its workloads."""

    def __init__(self, server_url: str, data_dir: Path, node: str = "local",
                 zone: str = "", advertise: str | None = None,
                 token: str | None = None, images_dir: Path | None = None) -> None:
        """``token``: the agent's ACL token (rights on nodes, services, containers and
        networks), sent with every call to the server. ``images_dir``: the node's image
        store (default: ``data_dir/images``)."""
        self.client = Client(server_url, token=token)
        # Service watches on connections of their own, which the server's fast lane
        # keeps (watch_hub.py): a connection that carried another request is aiohttp's.
        self.watch_client = Client(server_url, token=token)
        self.data_dir = private_dir(data_dir)
        self.node = node
        self.zone = zone
        self.workloads: list[Workload] = []
        self.instances: dict[str, list[dict[str, Any]]] = {}
        self.settings: dict[str, dict[str, Any]] = {}
        self.intentions: dict[str, Any] | None = None  # the /v1/intentions answer
        self.watches: dict[str, asyncio.Task[None]] = {}
        self.version = 0
        self._http: aiohttp.ClientSession | None = None
        self.networks = HostNetworks(node, advertise or source_address_towards(server_url))
        self.metrics = AgentMetrics(lambda: [w.status for w in self.workloads])
        self.metrics_listener: MetricsListener | None = None
        self.host_watches = HostWatches(self.client, self.networks, zone, self.metrics)
        self.sandboxes = Sandboxes(self.client, self.networks)
        self.containers = ContainerRunner(self.client, node, data_dir, self.networks,
                                          images_dir or data_dir / "images")
        self.roots = RootsWatch(self.client)
        self.host_started = False
        self.ingress: IngressGateway | None = None
        self._ingress_identity: WorkloadIdentity | None = None
        self.pods = PodRunner(self, node)
        self.service_gateways = ServiceGateways(self)

    def __repr__(self) -> str:
        return f"<Agent {self.client.base} workloads={len(self.workloads)}>"

    async def serve_metrics(self, host: str, port: int) -> str:
        """Serve ``GET /metrics`` on ``host:port`` (read-only) and register its address
        with this node, so discovery finds it; returns that address. Call before
        ``run_containers`` (which registers the node). Raises OSError naming it."""
        listener = MetricsListener(self.metrics.registry)
        await listener.start(host, port)
        self.metrics_listener = listener
        self.host_watches.metrics_address = listener.address_to_register(
            self.networks.address)
        return self.host_watches.metrics_address

    @property
    def http(self) -> aiohttp.ClientSession:
        if self._http is None:
            self._http = aiohttp.ClientSession()
        return self._http

    async def start(self, manifest: Manifest, cwd: Path, ready_timeout: float = 30.0) -> None:
        """Start every service in dependency order; wait until each app has started."""
        loop = asyncio.get_running_loop()
        self.watches["config"] = loop.create_task(self.watch_config())
        # Known before any sidecar starts, so none serves a moment unguarded.
        self.intentions, index = await answered(
            "reading intentions", partial(self.client.intentions, None))
        self.watches["intentions"] = loop.create_task(self.watch_intentions(index))
        protocols = {name: spec.protocol for name, spec in manifest.services.items()}
        networked = {name: s.network for name, s in manifest.services.items()
                     if s.in_namespace and s.network is not None}
        if networked:
            first = next(iter(networked))
            netns.require_root(f"service {first!r} on network {networked[first]!r}")
            self.start_host()
        await self.ensure_networks(set(networked.values()))
        for name in manifest.start_order():
            spec = manifest.services[name]
            for upstream in spec.upstreams:
                if upstream not in self.watches:
                    self.watches[upstream] = loop.create_task(self.watch_service(upstream))
            batch = [Workload(self, name, r, spec, cwd, protocols)
                     for r in range(spec.replicas)]
            self.workloads += batch
            for workload in batch:
                workload.start()
            await asyncio.wait_for(
                asyncio.gather(*(w.started.wait() for w in batch)), ready_timeout)
        published: dict[str, tuple[int, str]] = {
            name: (spec.ingress, str(spec.protocol))
            for name, spec in manifest.services.items() if spec.ingress is not None}
        if published:
            await self.start_ingress(published)

    async def start_ingress(self, published: dict[str, tuple[int, str]]) -> None:
        """The ingress gateway for the services the file publishes, with an identity
        of its own; raises Unavailable or OSError (its port is taken)."""
        for name in published:
            self.follow_service(name)
        gateway = IngressGateway(published, self.node, self.zone, self.gateway_identity())
        await gateway.start()
        self.ingress = gateway
        self.push_ingress()

    def gateway_identity(self) -> WorkloadIdentity:
        """The ingress gateway's identity, one for all its listeners (the up file's on
        loopback and the Services' on the host's addresses)."""
        if self._ingress_identity is None:
            identity = self.identity(INGRESS_SERVICE, self.data_dir / "ingress" / "identity")
            self.watches["ingress-identity"] = asyncio.get_running_loop().create_task(
                identity.run())
            identity.on_change = self.ingress_renewed
            self._ingress_identity = identity
        return self._ingress_identity

    def follow_service(self, service: str) -> None:
        """Keep ``service``'s instances current (for the sidecars that call it)."""
        if service not in self.watches:
            self.watches[service] = asyncio.get_running_loop().create_task(
                self.watch_service(service))

    def push_ingress(self) -> None:
        if self.ingress is not None:
            self.ingress.apply(self.snapshot(self.ingress.bootstrap))

    def ingress_renewed(self) -> None:
        self.service_gateways.renewed()
        gateway = self.ingress
        tls = gateway.renewed_tls() if gateway is not None else None
        if gateway is not None and tls is not None:
            gateway.bootstrap = replace(gateway.bootstrap, tls=tls)
            self.push_ingress()

    async def ensure_networks(self, names: set[str]) -> None:
        """Create the networks a file's services name that do not exist yet (bridge
        networks with a default pool), as Compose creates a project's networks."""
        for name in sorted(names):
            try:
                await self.client.network(name)
            except NotFound:
                with contextlib.suppress(Conflict):  # another agent made it meanwhile
                    await self.client.network_create(name)

    async def upstream_ends(self, upstreams: Sequence[str], timeout: float
                            ) -> dict[str, tuple[str, int]]:
        """Each upstream's virtual IP and port, once it has them (its first instance
        registered); raises Unavailable after ``timeout`` seconds."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        index = 0
        while True:
            body, index = await self.client.vips(index or None, wait=1.0)
            found = {v["service"]: v for v in body["vips"] if v["ports"]}
            missing = [u for u in upstreams if u not in found]
            if not missing:
                return {u: (found[u]["vip"], found[u]["ports"][0]) for u in upstreams}
            if loop.time() > deadline:
                raise Unavailable(f"upstream {', '.join(missing)} has no virtual IP yet "
                                  "(no instance registered)")

    def next_version(self) -> int:
        self.version += 1
        return self.version

    def snapshot(self, bootstrap: Snapshot) -> Snapshot:
        return build_snapshot(self.next_version(), bootstrap, self.instances, self.settings,
                              self.intentions)

    def guarded(self, bootstrap: Snapshot) -> Snapshot:
        return replace(bootstrap, intentions=intentions_for(bootstrap.service,
                                                            self.intentions))

    async def open_sandbox(self, instance: str, network: str, loopback: Sequence[str]
                           ) -> Sandbox:
        return await self.sandboxes.open(instance, network, loopback)

    async def start_image(self, record: dict[str, Any], container_dir: Path,
                          namespace: str | None, addresses: Sequence[str],
                          log_path: Path) -> ContainerProcess:
        return await self.containers.images.start(record, container_dir, namespace,
                                                  addresses, log_path)

    def release_image(self, container_dir: Path) -> None:
        self.containers.images.remove(container_dir)

    async def close_sandbox(self, box: Sandbox) -> None:
        await self.sandboxes.close(box)

    def identity(self, service: str, directory: Path) -> WorkloadIdentity:
        self.roots.start()  # one watch of the trust bundle for all workloads
        return WorkloadIdentity(self.client, self.roots, service, directory)

    async def push_where(self, service: str | None) -> None:
        """Push to every sidecar that calls ``service`` (all sidecars if None)."""
        targets = [w for w in self.workloads if w.admin_url and (
            service is None or service in w.spec.upstreams or service == w.service)]
        if self.ingress is not None and (service is None or service in self.ingress.published):
            self.push_ingress()
        self.service_gateways.push(service)
        await asyncio.gather(*(w.push() for w in targets))

    async def watch_service(self, service: str) -> None:
        index = 0
        while True:
            found, new_index = await answered(
                f"watch on {service} failed; keeping last endpoints",
                partial(self.watch_client.instances, service, index=index, wait=WATCH_WAIT))
            if new_index < index:
                index = 0  # the server's state was reset: resynchronise from scratch
                continue
            if new_index != index or service not in self.instances:
                self.instances[service] = found
                index = new_index
                await self.push_where(service)

    async def watch_config(self) -> None:
        index = 0
        while True:
            entries, new_index = await answered(
                "config watch failed; keeping last settings",
                partial(self.client.config_list, index=index, wait=WATCH_WAIT))
            if new_index < index:
                index = 0
                continue
            settings = {e["service"]: e["settings"] for e in entries}
            if new_index != index:
                index = new_index
                if settings != self.settings:
                    self.settings = settings
                    await self.push_where(None)

    async def watch_intentions(self, index: int) -> None:
        """Every change to the intentions reaches every sidecar (each enforces those
        that name its service): a deny takes effect on the next request."""
        while True:
            body, new_index = await answered(
                "intentions watch failed; sidecars keep the last ones",
                partial(self.client.intentions, index, WATCH_WAIT))
            index = 0 if new_index < index else new_index  # a reset server: start over
            if body != self.intentions:
                self.intentions = body
                await self.push_where(None)

    def run_containers(self) -> None:
        """Start running this node's containers (`meshlet run`)."""
        self.start_host()
        self.containers.start()
        self.pods.start()
        self.service_gateways.start()

    def start_host(self) -> None:
        """Once: clean up after an earlier run, then join the cluster's networking
        (register the node, follow nodes, networks and virtual IPs)."""
        if self.host_started:
            return
        self.host_started = True
        try:  # before any workload starts (each entry point calls this first)
            self.containers.images.sweep_workloads(self.data_dir / "workloads")
        except OSError as exc:
            log.warning("could not remove workloads' containers of an earlier run: %s", exc)
        self.watches["host"] = asyncio.get_running_loop().create_task(self.prepare_host())
        self.host_watches.start()

    async def prepare_host(self) -> None:
        """Remove what an earlier run of this node left (namespaces, links, mesh
        workloads' addresses) before any sandbox is made. If that fails, the host's
        networks say so to whoever waits for them (a sandbox cannot be made on a host
        that may hold an earlier run's links)."""
        try:
            await self.networks.clean_leftovers()
            await answered("releasing addresses of an earlier run",
                           self.sandboxes.release_leftover_addresses)
        except asyncio.CancelledError:
            self.networks.prepared("the agent stopped before the host was prepared")
            raise
        except Exception as exc:  # anything: those waiting must not wait forever
            log.error("preparing this host failed, so no sandbox can be made on it: %s",
                      exc)
            self.networks.prepared(str(exc) or type(exc).__name__)
            return
        self.networks.prepared()

    async def clear_host(self) -> None:
        """Once the sandboxes are closed: remove every meshlet link left on this host,
        the bridges and veths meshlet-cni made for a runtime's containers included."""
        try:
            await self.networks.clear()
        except (MeshletError, OSError) as exc:
            log.warning("could not remove this host's meshlet links (the next start "
                        "does): %s", exc)

    async def stop(self, grace: float = 10.0) -> None:
        """Stop the ingress gateway and workloads, callers first (reverse start order);
        containers; watches; then what is left of this host's links."""
        if self.ingress is not None:
            await self.ingress.stop(grace)
            self.ingress = None
        by_service: dict[str, list[Workload]] = {}
        for w in self.workloads:
            by_service.setdefault(w.service, []).append(w)
        for service in reversed(list(by_service)):
            await asyncio.gather(*(w.stop(grace) for w in by_service[service]
                                   if not isinstance(w, PodWorkload)))
        await self.service_gateways.stop()
        await self.pods.stop()
        await self.containers.stop()
        await self.host_watches.stop()
        await self.roots.stop()
        for task in self.watches.values():
            task.cancel()
        await asyncio.gather(*self.watches.values(), return_exceptions=True)
        if self.host_started:
            await self.clear_host()
        await self.client.close()
        await self.watch_client.close()
        if self._http is not None:
            await self._http.close()
        if self.metrics_listener is not None:
            await self.metrics_listener.stop()
            self.metrics_listener = None

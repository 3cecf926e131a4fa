"""The sidecar process: listeners from the bootstrap snapshot, config swaps, drain.

Listeners are bound once, from the first snapshot; later snapshots swap clusters
(endpoints and settings) in place, between requests, and the workload's certificate
(``tls``) for the next handshakes. ``stop()`` drains: listeners stop accepting, idle
connections close, in-flight requests finish (up to a deadline).

With ``tls``, inbound listeners accept mutual TLS only and outbound connections speak
it; without, both are plaintext (a sidecar started by hand, or a test's).
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from typing import Any

from meshlet.errors import ConfigError
from meshlet.observe.otlp import SpanCounters, SpanExporter
from meshlet.observe.proxy_metrics import ProxyMetrics
from meshlet.proxy.cluster import Cluster
from meshlet.proxy.config import ClusterConfig, Snapshot, cluster_key
from meshlet.proxy.h2_upstream import H2_PROTOCOLS, H2Connector
from meshlet.proxy.http import DownstreamHttp
from meshlet.proxy.listener import ListenerState
from meshlet.proxy.mesh_tls import MeshTls
from meshlet.proxy.settings import parsed
from meshlet.proxy.tcp import DownstreamTcp
from meshlet.proxy.tracing import Tracer

log = logging.getLogger(__name__)
IDLE_SWEEP_INTERVAL = 5.0
TICK = 0.05


class Sidecar:
    def __init__(self, snapshot: Snapshot) -> None:
        self.snapshot = snapshot
        self.metrics = ProxyMetrics()
        self.clusters: dict[str, Cluster] = {}
        self.listeners: list[ListenerState] = []
        self.sweeper: asyncio.Task[None] | None = None
        self.ticker: asyncio.Task[None] | None = None
        self.tls: MeshTls | None = None
        self.span_counters = SpanCounters(self.metrics.registry)
        self.exporter: SpanExporter | None = None
        self.tracer: Tracer | None = None
        self.retired: set[asyncio.Task[None]] = set()  # old exporters sending their last
        self.metrics.config_version.set(snapshot.version)

    def __repr__(self) -> str:
        return f"<Sidecar {self.snapshot.instance} v{self.snapshot.version} {self.listeners}>"

    async def start(self) -> None:
        """Bind every listener; raises OSError naming the address on failure, and
        ConfigError, before binding any, for a cluster that cannot be built."""
        self.check_clusters(self.snapshot)
        if self.snapshot.tls is not None:
            self.tls = MeshTls(self.snapshot.tls)
        loop = asyncio.get_running_loop()
        for lc in self.snapshot.listeners:
            cluster = self.cluster_for(cluster_key(lc.direction, lc.name), create=True)
            state = ListenerState(lc, cluster, self.metrics, loop)
            state.service = self.snapshot.service
            state.instance = self.snapshot.instance
            factory: Any = (lambda s=state: DownstreamTcp(s)) if lc.protocol == "tcp" \
                else (lambda s=state: DownstreamHttp(s))
            if lc.protocol in H2_PROTOCOLS:
                state.connector = H2Connector(loop)
            tls: dict[str, Any] = {}
            if lc.direction == "inbound":
                state.set_intentions(self.snapshot.intentions)
            if self.tls is not None and lc.direction == "inbound":
                tls = {"ssl": self.tls.listening, "ssl_handshake_timeout": lc.head_timeout}
                state.tls = self.snapshot.tls
            elif self.tls is not None:
                state.connector.tls = self.tls
                state.connector.identity = self.tls.config.identity(lc.name)
            try:
                state.server = await loop.create_server(factory, lc.host, lc.port,
                                                        reuse_address=True, backlog=1024,
                                                        **tls)
            except OSError as exc:
                await self.stop(0)
                raise OSError(exc.errno, f"cannot listen on {lc.host}:{lc.port} for "
                                         f"{lc.direction} {lc.name}: {exc.strerror}") from None
            state.port = state.server.sockets[0].getsockname()[1]
            self.listeners.append(state)
        self.sweeper = loop.create_task(self.sweep_idle())
        self.ticker = loop.create_task(self.tick())
        self.configure_tracing()

    def configure_tracing(self) -> None:
        """Tracing as the sidecar's own service's settings say (``tracing_endpoint``,
        ``trace_sampling``, inherited by its inbound cluster): an exporter for a new
        endpoint (the old one sends what it holds, in the background), none without."""
        own = self.snapshot.clusters.get(cluster_key("inbound", self.snapshot.service))
        settings = parsed(own.settings if own is not None else {})
        endpoint = settings.tracing_endpoint
        old = self.exporter
        if old is not None and old.endpoint != endpoint:
            self.exporter = None
            task = asyncio.get_running_loop().create_task(old.stop())
            self.retired.add(task)
            task.add_done_callback(self.retired.discard)
        if endpoint is None:
            self.tracer = None
        else:
            if self.exporter is None:
                self.exporter = SpanExporter(endpoint, self.snapshot.service,
                                             self.snapshot.instance, self.span_counters)
                self.exporter.start()
            if self.tracer is None or self.tracer.ratio != settings.trace_sampling:
                self.tracer = Tracer(settings.trace_sampling, random.Random())
        for state in self.listeners:
            http = state.config.protocol != "tcp"
            state.tracer = self.tracer if http else None
            state.exporter = self.exporter if http else None

    async def tick(self) -> None:
        """Request deadlines, checked every TICK seconds: one timer for all requests
        instead of one per request (a deadline fires up to TICK late)."""
        while True:
            await asyncio.sleep(TICK)
            now = time.monotonic()
            for state in self.listeners:
                state.expire(now)

    async def sweep_idle(self) -> None:
        """Close pooled connections idle longer than each cluster's idle_timeout."""
        while True:
            await asyncio.sleep(IDLE_SWEEP_INTERVAL)
            now = time.monotonic()
            for cluster in self.clusters.values():
                cluster.sweep_idle(now)

    def new_cluster(self, config: ClusterConfig) -> Cluster:
        """A cluster built from ``config``; raises ConfigError for any failure, so a
        snapshot the readers let through by mistake is refused (a 400 to the agent, a
        one-line error at start), never a 500 or a crash."""
        try:
            return Cluster(config, time.monotonic, random.Random(), self.snapshot.zone,
                           self.snapshot.node)
        except ConfigError:
            raise
        except Exception as exc:
            log.debug("cannot build cluster %s", config.name, exc_info=True)
            raise ConfigError(f"cluster {config.name!r}: cannot be built: "
                              f"{type(exc).__name__}: {exc}", "clusters") from None

    def check_clusters(self, snapshot: Snapshot) -> None:
        """Build every cluster of ``snapshot`` on scratch; raise ConfigError if one fails."""
        for config in snapshot.clusters.values():
            self.new_cluster(config).close()

    def cluster_for(self, name: str, create: bool = False) -> Cluster | None:
        cluster = self.clusters.get(name)
        if cluster is None and create:
            config = self.snapshot.clusters.get(name, ClusterConfig(name.partition(":")[2]))
            cluster = self.clusters[name] = self.new_cluster(config)
        return cluster

    def ports(self) -> dict[str, int]:
        return {f"{s.direction}:{s.destination}": s.port for s in self.listeners}

    def apply(self, snapshot: Snapshot) -> bool:
        """Swap in a newer snapshot whole, or change nothing.

        ``version`` orders one agent's pushes, which may arrive out of order: a snapshot
        applies only if its version is above the one in force (the bootstrap's is 0), and
        one at or below it is ignored (returns False). Versions are integers up to 2**53-1;
        only the agent can reach the admin socket, so no one else can push a version high
        enough to make its later pushes look old.

        Everything is checked before anything changes: the listeners must be those bound,
        and every cluster (settings, routes, partitions, endpoints) is first built on a
        scratch ``Cluster``. A refusal raises ConfigError and leaves the old snapshot in
        force, whole."""
        if snapshot.version <= self.snapshot.version:
            return False
        if snapshot.listeners != self.snapshot.listeners:
            raise ConfigError("listeners cannot change while the sidecar runs; restart it",
                              "listeners")
        if (snapshot.tls is None) != (self.snapshot.tls is None):
            raise ConfigError("tls cannot be turned on or off while the sidecar runs; "
                              "restart it", "tls")
        self.check_clusters(snapshot)
        renewed = None
        if snapshot.tls is not None and snapshot.tls != self.snapshot.tls:
            renewed = MeshTls.prepare(snapshot.tls)  # raises before anything changes
        self.snapshot = snapshot
        if renewed is not None and snapshot.tls is not None and self.tls is not None:
            self.tls.install(snapshot.tls, renewed)
            for state in self.listeners:
                if state.connector.tls is not None:
                    state.connector.identity = snapshot.tls.identity(state.destination)
            log.info("workload certificate %s in use", snapshot.tls.serial or "(renewed)")
        for name, config in snapshot.clusters.items():
            cluster = self.clusters.get(name)
            if cluster is None:
                self.clusters[name] = self.new_cluster(config)
            else:
                cluster.update(config)
        for state in self.listeners:
            state.cluster = self.clusters.get(cluster_key(state.direction, state.destination))
            state.configure()
            self.enforce(state, snapshot)
            if state.cluster is not None:
                self.metrics.forget_endpoints(state.direction, state.destination,
                                              {e.id for e in state.cluster.config.endpoints})
        self.configure_tracing()
        self.metrics.config_version.set(snapshot.version)
        log.info("config version %d applied", snapshot.version)
        return True

    @staticmethod
    def enforce(state: ListenerState, snapshot: Snapshot) -> None:
        """An inbound listener's intentions, from the next request; a TCP connection
        whose caller they now deny is closed (an HTTP one is refused its next request)."""
        if state.direction != "inbound":
            return
        state.set_intentions(snapshot.intentions)
        if snapshot.tls is not None:
            state.tls = snapshot.tls
        if state.config.protocol == "tcp":
            for conn in [c for c in state.connections if state.denied(c.source)]:
                conn.close()

    @property
    def active_requests(self) -> int:
        return sum(s.active_requests for s in self.listeners)

    def drain(self, direction: str | None = None) -> None:
        for state in self.listeners:
            if direction is None or state.direction == direction:
                state.drain()

    async def stop(self, grace: float = 10.0) -> None:
        """Drain, wait up to ``grace`` seconds for in-flight requests, then close all."""
        self.drain()
        for task in (self.sweeper, self.ticker):
            if task is not None:
                task.cancel()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + grace
        while self.active_requests > 0 and loop.time() < deadline:
            await asyncio.sleep(0.02)
        for state in self.listeners:
            for conn in list(state.connections):
                conn.close()
        for cluster in self.clusters.values():
            cluster.close()
        if self.exporter is not None:  # what the last requests recorded, if it can
            await self.exporter.stop()
            self.exporter = None
        for task in list(self.retired):
            task.cancel()

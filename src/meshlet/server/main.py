"""Runs a server: recover the node, serve the API, find or found its cluster, stop
cleanly on request."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

from aiohttp import web

from meshlet.addresses import is_loopback, parse_hostport, parse_http_url, same_listener
from meshlet.api.connection_limits import ConnectionGuard, aiohttp_limits, head_limits_middleware
from meshlet.api.fast_lane import FastLane, FastLaneStats, answer_watches
from meshlet.api.routes import Api
from meshlet.api.watch_hub import WatchHub
from meshlet.backoff import Backoff
from meshlet.errors import ConfigError, MeshletError
from meshlet.http_limits import API_HEAD_TIMEOUT
from meshlet.loop import freeze_startup_heap
from meshlet.private_files import private_tree, read_or_create_secret
from meshlet.server.acl_bootstrap import AclBootstrapper
from meshlet.server.deployments import DeploymentController
from meshlet.server.node_reaper import DEFAULT_TTL, NodeReaper
from meshlet.server.raft_node import PeerAddress, RaftServerNode
from meshlet.server.tls import ServerTls, check_root, prune_roots, record_root
from meshlet.server.waiting import WaitReport
from meshlet.state.intentions import IntentionDefaultSet

log = logging.getLogger(__name__)
MIN_JOIN_TOKEN = 16


async def record_default_intention(node: RaftServerNode, policy: str,
                                   interval: float = 0.1) -> None:
    """Runs until the default intention policy is in the state: the founding leader
    records ``policy``. A server started later with another one keeps the recorded
    policy, and says so."""
    while not node.machine.intentions.recorded:
        if node.is_leader:
            try:
                await node.propose(IntentionDefaultSet(policy))
            except MeshletError as exc:
                log.debug("cannot record the default intention policy yet: %s", exc)
        await node.wait_for_change(lambda: node.machine.index, node.machine.index,
                                   interval)
    recorded = node.machine.intentions.default_policy
    if recorded != policy:
        log.warning("the cluster's default intention policy is %s (recorded when it was "
                    "founded); --default-intention %s is ignored", recorded, policy)


@dataclass
class ServerOptions:
    """How this server finds its cluster. With none of ``peers``, ``join`` or
    ``bootstrap_expect`` it founds a cluster of one (which can grow if it has a
    ``raft`` address)."""

    server_id: str = "server-1"
    raft: tuple[str, int] | None = None
    peers: dict[str, PeerAddress] = field(default_factory=dict)
    join: list[str] = field(default_factory=list)
    bootstrap_expect: int | None = None
    snapshot_every: int = 8192
    snapshot_interval: float = 30.0  # at most one snapshot per this many seconds
    node_ttl: float = DEFAULT_TTL  # a node silent this long is deregistered
    # Seconds a client has to send a request head (from its connection's start or its
    # last answer), and again for the body, from the head's end.
    head_timeout: float = API_HEAD_TIMEOUT
    max_connections: int = 0  # client connections at most; 0: from the descriptor limit
    # The cluster's shared secret: servers send it to each other (founding, joining),
    # and a request that carries it may use the Raft membership endpoints.
    join_token: str | None = None
    # A benchmark's baseline only (bench/acl_bench.py); no command-line flag sets it.
    enforce_acl: bool = True
    https: bool = False  # the API over HTTPS on loopback too (beyond it, always)
    # The intention policy where none decides, recorded when the cluster is founded.
    default_intention: str = "allow"

    def check(self) -> None:
        """Raise ConfigError for combinations that cannot work."""
        if self.snapshot_interval < 0:
            raise ConfigError("snapshot_interval: must not be negative", "snapshot_interval")
        if self.node_ttl <= 0:
            raise ConfigError("node_ttl: must be more than 0", "node_ttl")
        if not 0 < self.head_timeout <= 3600:
            raise ConfigError("head_timeout: must be more than 0 and at most 3600 seconds",
                              "head_timeout")
        if self.max_connections < 0:
            raise ConfigError("max_connections: must not be negative", "max_connections")
        if self.raft is not None and not self.join_token:
            raise ConfigError("--raft needs the cluster's join token: give --join-token or "
                              "MESHLET_JOIN_TOKEN, the same on every server (make one "
                              "with `meshlet keygen`)", "join_token")
        if self.join_token is not None and len(self.join_token) < MIN_JOIN_TOKEN:
            raise ConfigError(f"--join-token: must be at least {MIN_JOIN_TOKEN} characters "
                              "(make one with `meshlet keygen`)", "join_token")
        if (self.peers or self.join or self.bootstrap_expect) and self.raft is None:
            raise ConfigError("--peer, --join and --bootstrap-expect need --raft", "raft")
        if self.server_id in self.peers:
            raise ConfigError(f"--peer names this server's own id {self.server_id!r}",
                              "peer")
        if self.peers and self.bootstrap_expect:
            raise ConfigError("give either --peer or --bootstrap-expect, not both",
                              "bootstrap_expect")
        for url in self.join:
            parse_http_url(url, "--join")
            if self.raft is not None and same_listener(self.raft,
                                                       parse_hostport(url, "--join")):
                raise ConfigError(f"--join {url}: that is this server's own Raft address; "
                                  "give the API address of another server", "join")
        if self.bootstrap_expect is not None and self.bootstrap_expect > 1 and not self.join:
            raise ConfigError("--bootstrap-expect needs --join addresses of the other "
                              "servers", "join")


class Server:
    """A started server; ``url`` is where its API listens (the real port if 0 was asked)."""

    def __init__(self, node: RaftServerNode, runner: web.AppRunner, url: str,
                 api: Api, listening: asyncio.Server, fast_lane: FastLaneStats,
                 reaper: NodeReaper, acl: AclBootstrapper) -> None:
        self.node = node
        self.reaper = reaper
        self.acl = acl
        self.runner = runner
        self.url = url
        self.api = api
        self.listening = listening
        self.fast_lane = fast_lane
        self.finding: asyncio.Task[None] | None = None
        self.background: list[asyncio.Task[None]] = []  # run while the server does
        self.controller: asyncio.Task[None] | None = None  # deployments (a test stops it)

    def __repr__(self) -> str:
        return f"<Server {self.url} {self.node!r}>"

    @classmethod
    async def start(cls, data_dir: Path, host: str, port: int,
                    options: ServerOptions | None = None) -> Server:
        """Raises StorageError on a corrupt log, OSError if a port is taken,
        ConfigError for options that cannot work."""
        options = options or ServerOptions()
        options.check()
        private_tree(data_dir)  # 0700/0600, tightened where an older version made it wider
        sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            sock.close()
            raise
        https = options.https or not is_loopback(host)
        netloc = f"[{host}]" if ":" in host else host  # an IPv6 address is bracketed
        url = f"{'https' if https else 'http'}://{netloc}:{sock.getsockname()[1]}"
        address = PeerAddress(options.raft, url)
        founders = None
        if options.peers:
            founders = {**options.peers, options.server_id: address}
        elif options.bootstrap_expect == 1 or not (options.join or options.bootstrap_expect):
            founders = {options.server_id: address}
        tls = ServerTls.make(data_dir, options.server_id, host, options.raft,
                             options.join_token, https)
        join_token = tls.join_token if tls is not None else options.join_token
        # The CA's roots are derived from the join token; a server alone without one
        # keeps one of its own, as it does for HTTPS.
        ca_token = join_token or read_or_create_secret(data_dir / "join.token")
        node = RaftServerNode(data_dir, options.server_id, address, founders,
                              options.snapshot_every, options.snapshot_interval,
                              tls.raft() if tls is not None else None)
        try:
            await node.open()
            check_root(node, ca_token)
            if tls is not None:
                node.adopt_roots = tls.adopt
        except BaseException:
            sock.close()
            with contextlib.suppress(Exception):
                await node.stop()
            raise
        reaper = NodeReaper(node, options.node_ttl)
        api = Api(node, reaper, options.join_token, options.enforce_acl)
        api.metrics.registry.register(node.apply_latency)
        api.ca_token = ca_token
        if tls is not None:
            node.ca_file = api.ca_file = str(tls.creds.ca_file)
        app = api.app()
        guard = ConnectionGuard(options.head_timeout, options.max_connections)
        app.middlewares[:0] = [head_limits_middleware, guard.middleware]
        runner = web.AppRunner(app, access_log=None, shutdown_timeout=1.0,
                               **aiohttp_limits(options.head_timeout))
        await runner.setup()
        aiohttp_protocol = runner.server
        assert aiohttp_protocol is not None
        stats = FastLaneStats()
        stats.guard = guard
        stats.guard.start(lambda: len(aiohttp_protocol.connections))
        stats.hub = WatchHub(api, guard.head_deadline, partial(answer_watches, stats=stats))
        stats.hub.start()
        listening = await asyncio.get_running_loop().create_server(
            lambda: FastLane(api, aiohttp_protocol, stats), sock=sock, backlog=1024,
            ssl=tls.api() if https and tls is not None else None)
        reaper.start()
        acl = AclBootstrapper(node, lambda: bool(node.machine.ca.root))
        acl.start()
        server = cls(node, runner, url, api, listening, stats, reaper, acl)
        loop = asyncio.get_running_loop()
        if options.raft is not None:
            server.background.append(loop.create_task(node.refresh_members(join_token)))
        server.background.append(loop.create_task(record_root(node, ca_token)))
        server.background.append(loop.create_task(
            record_default_intention(node, options.default_intention)))
        if tls is not None:
            server.background += [loop.create_task(tls.renew_forever()),
                                  loop.create_task(tls.follow_roots(node))]
        server.background.append(loop.create_task(prune_roots(node)))
        server.controller = loop.create_task(
            DeploymentController(node, api.metrics.registry).run())
        server.background.append(server.controller)
        if founders is None and options.server_id not in node.driver.members:
            server.finding = asyncio.get_running_loop().create_task(
                server.find_cluster(options))
        log.info("server API at %s (data in %s)", url, data_dir)
        return server

    async def find_cluster(self, options: ServerOptions) -> None:
        """Join a running cluster through ``join``, or, with ``bootstrap_expect`` N,
        found one as soon as N servers that have none can see each other."""
        try:
            if options.bootstrap_expect:
                await self.bootstrap(options)
            else:
                await self.node.join(options.join, join_token=options.join_token)
        except MeshletError as exc:
            log.error("could not find a cluster: %s", exc)

    async def bootstrap(self, options: ServerOptions) -> None:
        """Found a cluster once ``bootstrap_expect`` servers without one answer (this
        one among them), or join one that the others already have; says whom it has
        found."""
        from meshlet.api.client import Client
        urls, expect = options.join, options.bootstrap_expect or 1
        node = self.node
        backoff = Backoff(base=0.1, cap=2.0)
        report = WaitReport(log)
        while not node.driver.members:
            found = {node.id: node.address.info()}
            established = False
            silent = []
            for url in urls:
                try:
                    async with Client(url, timeout=2.0, join_token=options.join_token,
                                      ca_file=node.ca_file) as client:
                        other = await client.raft_self()
                except MeshletError as exc:
                    silent.append(f"{url}: {exc}")
                    continue
                if other["bootstrapped"]:
                    established = True
                elif other["id"] != node.id:
                    found[other["id"]] = {"raft": other["raft"], "http": other["http"]}
            if established:
                await node.join(urls, join_token=options.join_token)
                return
            if len(found) == expect:
                if node.driver.found(found):
                    log.info("founded a cluster of %s", ", ".join(sorted(found)))
                return
            report.say(bootstrap_wait_text(node.id, found, expect, silent))
            await asyncio.sleep(backoff.next_delay())

    async def stop(self) -> None:
        for task in (self.finding, *self.background):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        await self.reaper.stop()
        await self.acl.stop()
        self.listening.close()
        await self.fast_lane.guard.stop()
        if self.fast_lane.hub is not None:
            self.fast_lane.hub.stop()
        self.fast_lane.senders.close()
        for conn in list(self.fast_lane.connections):
            conn.close()
        await self.runner.cleanup()
        await self.node.stop()


def bootstrap_wait_text(me: str, found: dict[str, dict[str, str]], expect: int,
                        silent: list[str]) -> str:
    """What a server waiting for ``--bootstrap-expect`` has found, and who is silent."""
    servers = ", ".join(f"{i} (this server)" if i == me else f"{i} at {found[i]['http']}"
                        for i in sorted(found))
    if len(found) > expect:
        text = (f"found {len(found)} servers without a cluster, more than "
                f"--bootstrap-expect {expect}: {servers}; not founding one")
    else:
        text = (f"waiting for {expect} servers to found a cluster "
                f"(--bootstrap-expect {expect}), found {len(found)}: {servers}")
    if silent:
        text += "; no answer from " + "; ".join(silent)
    return text


async def serve_forever(data_dir: Path, host: str, port: int, stop: asyncio.Event,
                        options: ServerOptions | None = None) -> None:
    server = await Server.start(data_dir, host, port, options)
    freeze_startup_heap()
    print(f"meshlet server: API at {server.url}, data in {data_dir}", flush=True)
    print(f"meshlet server: the management token is written to {server.acl.path} "
          "if this server founds the cluster", flush=True)
    try:
        await stop.wait()
    finally:
        await server.stop()

"""Runs this node's containers (`meshlet run`) as the control plane describes them.

A watch on the node's containers drives a reconcile: start what should run and does
not, stop what should not, join or leave networks, and clean up after containers
that are gone. Each container gets its own network namespace, ``ml-<node tag>-<name>``,
plugged into each network's bridge; its process runs there through
`ip netns exec`, which also gives it ``/etc/netns/<ns>/resolv.conf`` when there is one.
What the agent sees (running with a pid, exited with a code, failed with a reason) is
reported back. On start it first removes every namespace of this node left by an
earlier run, and the bridges (made again as containers need them), so a crash leaves
nothing behind, then starts again what should run. A bridge lives while a container
of this node uses it.

pyroute2's calls run in a worker thread: it drives an event loop of its own, which
cannot run inside the agent's.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import os
import shutil
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any, TypeVar

from pyroute2.netlink.exceptions import NetlinkError

from meshlet.agent.process import spawn, terminate
from meshlet.agent.sandboxes import Sandboxes
from meshlet.api.client import Client
from meshlet.errors import MeshletError
from meshlet.net import bridge, dns, dns_listener, names, netns, vxlan
from meshlet.net.overlay_plan import mac_for, remotes
from meshlet.net.ports import PortForwarder
from meshlet.state.containers import parse_port

log = logging.getLogger(__name__)
T = TypeVar("T")


def exit_status(code: int) -> int:
    """As a shell reports it: 128 + N for a process killed by signal N."""
    return 128 - code if code < 0 else code


async def answered(what: str, call: Callable[[], Awaitable[T]]) -> T:
    """``call()``'s answer, retried with backoff while the server cannot give one."""
    delay = 0.2
    while True:
        try:
            return await call()
        except MeshletError as exc:
            log.warning("%s: %s", what, exc)
            await asyncio.sleep(delay)
            delay = min(delay * 2, 5.0)


def namespace_prefix(node: str) -> str:
    return f"{netns.PREFIX}{hashlib.sha1(node.encode()).hexdigest()[:6]}-"


@dataclass
class Running:
    """A container this agent started, and what it set up for it."""

    name: str
    namespace: str | None
    process: asyncio.subprocess.Process | None = None
    forwarders: list[PortForwarder] = field(default_factory=list)
    networks: list[str] = field(default_factory=list)   # attached, in interface order
    waiter: asyncio.Task[None] | None = None
    dns: dns_listener.DnsEndpoint | None = None
    stopping: bool = False


class ContainerRunner:
    def __init__(self, client: Client, node: str, data_dir: Path,
                 address: str = "127.0.0.1") -> None:
        self.client = client
        self.node = node
        self.address = address  # where other hosts reach this one: the tunnel end
        self.dir = data_dir / "containers"
        self.prefix = namespace_prefix(node)
        self.running: dict[str, Running] = {}
        self.everyone: dict[str, dict[str, Any]] = {}  # every node's containers
        self.directory: dict[str, Any] = {}            # every workload by name, for DNS
        self.nodes: dict[str, str] = {}                # node -> address
        self.vips: dict[str, dict[str, Any]] = {}      # service -> {vip, ports}
        self.infos: dict[str, dict[str, Any]] = {}     # networks, as last fetched
        self.task: asyncio.Task[None] | None = None
        self.node_task: asyncio.Task[None] | None = None
        self.vip_task: asyncio.Task[None] | None = None
        self.network_task: asyncio.Task[None] | None = None
        self.beat_task: asyncio.Task[None] | None = None
        self.registered = False
        self.sandboxes = Sandboxes(self)          # mesh workloads' namespaces
        self.cleaned = asyncio.Event()            # leftovers gone: namespaces may be made
        self.lock = asyncio.Lock()

    def __repr__(self) -> str:
        return f"<ContainerRunner {self.node} running={sorted(self.running)}>"

    def start(self) -> None:
        loop = asyncio.get_running_loop()
        self.task = loop.create_task(self.watch())
        self.node_task = loop.create_task(self.watch_nodes())
        self.vip_task = loop.create_task(self.watch_vips())
        self.network_task = loop.create_task(self.watch_networks())

    @property
    def tunnels(self) -> bool:
        """Whether overlay networks reach other hosts (not when on loopback only)."""
        return not self.address.startswith("127.")

    def clean_leftovers(self) -> None:
        """Remove this node's namespaces from an earlier run (their veths go with them)."""
        if not netns.can_manage():
            return
        for name in netns.ours():
            if name.startswith(self.prefix):
                log.info("removing leftover namespace %s", name)
                netns.remove(name)
        for name in bridge.ours():
            if name.startswith((bridge.BRIDGE_PREFIX, vxlan.VXLAN_PREFIX)):
                log.info("removing leftover bridge %s", name)
                bridge.delete_link(name)

    async def watch(self) -> None:
        await asyncio.to_thread(self.clean_leftovers)
        await answered("releasing addresses of an earlier run",
                       self.sandboxes.release_leftover_addresses)
        self.cleaned.set()
        index = 0
        while True:
            found, index = await answered(
                "watching containers", partial(self.client.containers, None, index or None))
            async with self.lock:
                try:
                    self.everyone = {c["name"]: c for c in found}
                    self.directory = names.directory(self.everyone, self.infos.values())
                    await self.reconcile({c["name"]: c for c in found
                                          if c["node"] == self.node})
                    await self.program_overlays()
                except Exception:  # a bug here must not stop every container's care
                    log.exception("reconciling containers failed; retrying")
                    await asyncio.sleep(1.0)
                    index = 0

    async def reconcile(self, wanted: dict[str, dict[str, Any]]) -> None:
        for name in [n for n in self.running if n not in wanted]:
            await self.remove(name)
        for name, spec in wanted.items():
            run = self.running.get(name)
            alive = run is not None and run.process is not None \
                and run.process.returncode is None
            if spec["desired"] == "running" and not alive:
                if run is None and spec["status"] in ("created", "running"):
                    await self.launch(spec)
            elif spec["desired"] == "stopped" and alive and run is not None:
                await self.halt(run)
            elif alive and run is not None and run.networks != spec["networks"]:
                await self.rewire(run, spec)

    async def watch_nodes(self) -> None:
        """Register this host, then follow the others: an overlay's tunnels go to them."""
        answer = await answered(f"registering node {self.node}",
                                lambda: self.client.node_register(self.node, self.address))
        self.registered = True
        self.beat_task = asyncio.get_running_loop().create_task(
            self.heartbeat(float(answer.get("ttl", 30.0))))
        index = 0
        while True:
            found, index = await answered("watching nodes",
                                          partial(self.client.nodes, index or None))
            async with self.lock:
                self.nodes = {n["name"]: n["address"] for n in found}
                try:
                    await self.program_overlays()
                except (OSError, NetlinkError) as exc:
                    log.warning("programming overlay entries: %s", exc)

    async def watch_vips(self) -> None:
        """Follow services' virtual IPs and ports, which the embedded DNS answers."""
        index = 0
        while True:
            body, index = await answered("watching service VIPs",
                                         partial(self.client.vips, index or None))
            self.vips = {v["service"]: v for v in body["vips"]}

    async def watch_networks(self) -> None:
        """Follow networks: who holds which address on an overlay, on any host."""
        index = 0
        while True:
            found, index = await answered("watching networks",
                                          partial(self.client.networks_after, index or None))
            async with self.lock:
                self.infos = {n["name"]: n for n in found}
                self.directory = names.directory(self.everyone, self.infos.values())
                try:
                    await self.program_overlays()
                except (OSError, NetlinkError) as exc:
                    log.warning("programming overlay entries: %s", exc)

    async def heartbeat(self, ttl: float) -> None:
        """Register again every third of the TTL, so the server knows this host lives
        (and takes it back if it was deregistered while cut off)."""
        while True:
            await asyncio.sleep(ttl / 3)
            try:
                answer = await self.client.node_register(self.node, self.address)
                ttl = float(answer.get("ttl", ttl))
            except MeshletError as exc:
                log.info("node heartbeat failed: %s", exc)

    async def program_overlays(self) -> None:
        """Set each local overlay's forwarding and neighbour entries from the catalog."""
        if not self.tunnels:
            return
        local = {n for n in self.networks_in_use()
                 if self.infos.get(n, {}).get("driver") == "overlay"}
        for network in sorted(local):
            wanted = remotes(self.infos[network]["addresses"], self.everyone, self.nodes,
                             self.node)
            await asyncio.to_thread(vxlan.program, network, wanted)

    async def launch(self, spec: dict[str, Any]) -> None:
        name = spec["name"]
        addressed = spec["addresses"]
        namespace = self.prefix + name if addressed or spec["networks"] == ["none"] \
            else None
        run = Running(name, namespace)
        self.running[name] = run
        log_path = self.dir / f"{name}.log"
        try:
            if namespace is not None:
                netns.require_root(f"container {name!r} on its own network")
                await asyncio.to_thread(netns.create, namespace)
                await self.rewire(run, spec)
                await asyncio.to_thread(dns_listener.write_resolv_conf, namespace)
                run.dns = await dns_listener.serve(namespace, self.resolver(name))
                argv = ["ip", "netns", "exec", namespace, *spec["command"]]
            else:
                argv = list(spec["command"])
            workdir = self.dir / name
            workdir.mkdir(parents=True, exist_ok=True)
            run.process = await spawn(argv, {**os.environ, **spec["env"]}, workdir, log_path)
            target = next(iter(addressed.values()), None)
            for text in spec["ports"]:
                port = parse_port(text)
                assert target is not None  # the control plane checked it
                forwarder = PortForwarder(port.host_ip, port.host_port, target, port.port)
                await forwarder.start()
                run.forwarders.append(forwarder)
        except (MeshletError, OSError, NetlinkError) as exc:
            log.warning("container %s failed to start: %s", name, exc)
            await self.teardown(run, keep_record=True)
            await self.report(name, status="failed", detail=str(exc), log=str(log_path))
            return
        run.waiter = asyncio.get_running_loop().create_task(self.wait_exit(run))
        await self.report(name, status="running", pid=run.process.pid,
                          namespace=namespace or "", log=str(log_path))

    async def rewire(self, run: Running, spec: dict[str, Any]) -> None:
        """Attach the networks the spec names and detach the others."""
        if run.namespace is None:
            return
        infos = self.infos = {n["name"]: n for n in (await self.client.networks())}
        gone = [n for n in run.networks if n not in spec["networks"]]
        for network in gone:
            await asyncio.to_thread(bridge.detach, network, run.name)
            run.networks.remove(network)
        await self.drop_unused_bridges(gone)
        for network in spec["networks"]:
            address = spec["addresses"].get(network)
            if network in run.networks or address is None:
                continue
            info = infos[network]
            prefix = int(info["subnet"].split("/")[1])
            gateway = None if info["internal"] else info["gateway"]
            await asyncio.to_thread(bridge.ensure_bridge, network, gateway, prefix)
            mtu = await self.ensure_tunnel(info)
            await asyncio.to_thread(bridge.attach, bridge.Attachment(
                network, run.name, run.namespace, f"eth{len(run.networks)}", address,
                prefix, gateway if not run.networks else None, mac_for(address), mtu))
            run.networks.append(network)

    async def ensure_tunnel(self, info: dict[str, Any]) -> int | None:
        """An overlay's VXLAN device on its bridge; the MTU its workloads must use."""
        if info["driver"] != "overlay" or not self.tunnels:
            return None
        mtu = await asyncio.to_thread(vxlan.mtu_for, self.address)
        await asyncio.to_thread(vxlan.ensure_vxlan, info["name"], info["vni"],
                                self.address, mtu)
        return mtu

    async def wait_exit(self, run: Running) -> None:
        assert run.process is not None
        code = exit_status(await run.process.wait())
        for forwarder in run.forwarders:
            await forwarder.stop()
        run.forwarders.clear()
        if not run.stopping:
            await self.report(run.name, status="exited", exit_code=code,
                              namespace=run.namespace or "",
                              log=str(self.dir / f"{run.name}.log"))

    async def halt(self, run: Running) -> None:
        run.stopping = True
        code = exit_status(await terminate(run.process)) if run.process is not None \
            else None
        if run.waiter is not None:
            await run.waiter
        await self.report(run.name, status="exited", exit_code=code,
                          namespace=run.namespace or "",
                          log=str(self.dir / f"{run.name}.log"))

    async def remove(self, name: str) -> None:
        run = self.running.pop(name)
        await self.teardown(run, keep_record=False)

    async def teardown(self, run: Running, keep_record: bool) -> None:
        """Stop the process and forwarders; remove links and the namespace."""
        run.stopping = True
        if run.process is not None and run.process.returncode is None:
            await terminate(run.process)
        if run.waiter is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await run.waiter
        for forwarder in run.forwarders:
            await forwarder.stop()
        if run.dns is not None:
            run.dns.close()
            run.dns = None
        if run.namespace is not None and netns.can_manage():
            for network in run.networks:
                await asyncio.to_thread(bridge.detach, network, run.name)
            await asyncio.to_thread(netns.remove, run.namespace)
            networks, run.networks = run.networks, []
            await self.drop_unused_bridges(networks)
        if not keep_record:
            (self.dir / f"{run.name}.log").unlink(missing_ok=True)
            shutil.rmtree(self.dir / run.name, ignore_errors=True)
        else:
            self.running.pop(run.name, None)

    def resolver(self, asker: str) -> dns_listener.Lookup:
        """Names as container ``asker`` sees them (``net/names.py``)."""
        def lookup(name: str) -> dns.Records | None:
            me = self.everyone.get(asker)
            return names.resolve(name, me, self.directory, self.vips) if me else None
        return lookup

    def networks_in_use(self) -> set[str]:
        return {n for run in self.running.values() for n in run.networks} | \
            self.sandboxes.networks()

    async def drop_unused_bridges(self, networks: list[str]) -> None:
        """A bridge lives while a container or mesh workload of this node uses it."""
        in_use = self.networks_in_use()
        for network in networks:
            if network not in in_use:
                await asyncio.to_thread(bridge.delete_link, vxlan.vxlan_name(network))
                await asyncio.to_thread(bridge.remove_bridge, network)

    async def report(self, name: str, **status: Any) -> None:
        try:
            await self.client.container_report(name, **status)
        except MeshletError as exc:
            log.info("could not report %s for %s: %s", status.get("status"), name, exc)

    async def stop(self) -> None:
        """Stop every container and remove what was set up for it (agent shutdown)."""
        async with self.lock:  # let a reconcile in progress finish its work first
            for task in (self.task, self.node_task, self.vip_task, self.network_task,
                         self.beat_task):
                if task is not None:
                    task.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await task
            for name in list(self.running):
                run = self.running.pop(name)
                await self.teardown(run, keep_record=True)
        if not self.registered:
            return
        try:  # leave: other hosts drop their tunnels to this one
            await asyncio.wait_for(self.client.node_deregister(self.node), 5)
            self.registered = False
        except (TimeoutError, MeshletError) as exc:
            log.info("could not deregister node %s: %s", self.node, exc)

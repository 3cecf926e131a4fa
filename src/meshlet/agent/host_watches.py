"""This host in the cluster: it registers its node (the address other hosts' tunnels
send to), re-registers every third of the node TTL so the server knows it lives, and
follows the nodes, the networks and the services' virtual IPs into the view of its
``HostNetworks``; on a change it removes the links of networks removed from the
cluster and re-programs overlays. Stopping deregisters the node, so other hosts drop
their tunnel entries for it."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import Awaitable, Callable
from functools import partial
from typing import Any, TypeVar

from meshlet.agent.host_networks import HostNetworks
from meshlet.agent.retry import answered
from meshlet.api.client import Client
from meshlet.errors import MeshletError
from meshlet.observe.agent_metrics import AgentMetrics

log = logging.getLogger(__name__)
T = TypeVar("T")


def capacity() -> tuple[float, int]:
    """The CPUs this agent may use and the host's memory (bytes; 0 if unreadable):
    what the control plane places replicas against."""
    memory = 0
    with contextlib.suppress(OSError, ValueError, IndexError), \
            open("/proc/meminfo") as meminfo:
        for line in meminfo:
            if line.startswith("MemTotal:"):
                memory = int(line.split()[1]) * 1024
                break
    return float(len(os.sched_getaffinity(0))), memory


class HostWatches:
    def __init__(self, client: Client, host: HostNetworks, zone: str = "",
                 metrics: AgentMetrics | None = None) -> None:
        self.client = client
        self.host = host
        self.zone = zone
        self.metrics = metrics or AgentMetrics()
        self.metrics_address = ""  # HOST:PORT of the agent's /metrics, registered with the node
        self.tasks: list[asyncio.Task[None]] = []
        self.registered = False

    def __repr__(self) -> str:
        return f"<HostWatches {self.host.node} registered={self.registered}>"

    def start(self) -> None:
        loop = asyncio.get_running_loop()
        self.tasks = [loop.create_task(self.watch_nodes()),
                      loop.create_task(self.watch_vips()),
                      loop.create_task(self.watch_networks())]

    async def reprogram(self) -> None:
        """Bring the host in line with the view: removed networks' links, overlays'
        entries (each retried on the next change if it fails)."""
        try:
            await self.host.remove_gone_networks()
        except MeshletError as exc:
            log.warning("removing the links of removed networks: %s", exc)
        try:
            await self.host.program_overlays()
        except MeshletError as exc:
            log.warning("programming overlay entries: %s", exc)

    async def follow(self, what: str, fetch: Callable[[int | None], Awaitable[tuple[T, int]]],
                     take: Callable[[T], None], reprogram: bool = True) -> None:
        """Blocking queries with ``fetch(index)``, each answer given to ``take``. The
        first asks for an answer now; each later one waits past the index it was given,
        0 included (a table never written yet), so an empty table is not polled."""
        index: int | None = None
        while True:
            found, index = await answered(what, partial(fetch, index))
            take(found)
            if reprogram:
                await self.reprogram()

    async def watch_nodes(self) -> None:
        """Register this host, then follow the others: an overlay's tunnels go to them."""
        answer = await answered(f"registering node {self.host.node}", self.register)
        self.registered = True
        self.metrics.node_registered.set(1)
        self.tasks.append(asyncio.get_running_loop().create_task(
            self.heartbeat(float(answer.get("ttl", 30.0)))))
        await self.follow("watching nodes", self.client.nodes, self.host.view.set_nodes)

    async def register(self) -> dict[str, Any]:
        """Register this host with its zone and what it offers pods."""
        cpus, memory = capacity()
        try:
            return await self.client.node_register(self.host.node, self.host.address,
                                                   self.zone, cpus, memory,
                                                   self.metrics_address)
        except MeshletError:
            self.metrics.report_failed("node")
            raise

    async def heartbeat(self, ttl: float) -> None:
        """Register again every third of the TTL (which also takes the node back if it
        was deregistered while cut off)."""
        while True:
            await asyncio.sleep(ttl / 3)
            try:
                answer = await self.register()
                ttl = float(answer.get("ttl", ttl))
            except MeshletError as exc:
                log.info("node heartbeat failed: %s", exc)

    async def watch_vips(self) -> None:
        """Follow services' virtual IPs and ports, which the embedded DNS answers."""
        await self.follow("watching service VIPs", self.client.vips,
                          lambda body: self.host.view.set_vips(body["vips"]), reprogram=False)

    async def watch_networks(self) -> None:
        """Follow networks: who holds which address on an overlay, on any host, and
        which networks are gone."""
        await self.follow("watching networks", self.client.networks_after,
                          self.host.set_networks)

    async def stop(self) -> None:
        """Stop following; leave, so other hosts drop their tunnels to this one."""
        async with self.host.lock:  # let overlay programming in progress finish first
            for task in self.tasks:
                task.cancel()
            for task in self.tasks:
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        if not self.registered:
            return
        try:
            await asyncio.wait_for(self.client.node_deregister(self.host.node), 5)
            self.registered = False
            self.metrics.node_registered.set(0)
        except (TimeoutError, MeshletError) as exc:
            log.info("could not deregister node %s: %s", self.host.node, exc)

"""NodePort and LoadBalancer Services, published on this node's host addresses.

Every agent follows the cluster's Services and runs, for each host port they publish
(``deploy/published.py``), a gateway listener on all the host's addresses: a sidecar
inside the agent that balances across the Service's ready replicas wherever they run
and calls them in mutual TLS as the ingress gateway's identity, as kube-proxy makes a
NodePort reachable on every node. A port that cannot be bound (taken, or below 1024
without root) is logged and tried again on the next change.

The replicas have their addresses on the pods' overlay. While a Service is published
here the host itself is on that overlay (``Sandboxes.join``), so that its gateways reach
the replicas on other hosts while none runs on this one (a Deployment scaled below the
number of nodes, or a node that just came back).
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import replace
from functools import partial
from typing import Any

from meshlet.agent.ingress import IngressGateway
from meshlet.agent.retry import answered
from meshlet.backoff import Backoff
from meshlet.deploy.published import Published, published_ports
from meshlet.errors import MeshletError

log = logging.getLogger(__name__)
ALL_ADDRESSES = "0.0.0.0"
WATCH_WAIT = 30.0


class ServiceGateways:
    """``host``: the agent (its client, instances, identity and snapshots)."""

    def __init__(self, host: Any, bind: str = ALL_ADDRESSES) -> None:
        self.host = host
        self.bind = bind
        self.gateways: dict[Published, IngressGateway] = {}
        self.identity: Any = None
        self.task: asyncio.Task[None] | None = None
        self.joining: asyncio.Task[None] | None = None
        self.joined = False  # the host is on the pods' overlay itself

    def __repr__(self) -> str:
        return f"<ServiceGateways {sorted(p.host_port for p in self.gateways)}>"

    def start(self) -> None:
        if self.task is None:
            self.task = asyncio.get_running_loop().create_task(self.watch())

    async def watch(self) -> None:
        index = 0
        while True:
            records, new_index = await answered(
                "services watch failed; keeping the published ports",
                partial(self.host.client.objects, kind="Service", index=index or None,
                        wait=WATCH_WAIT))
            index = 0 if new_index < index else new_index
            records = sorted(records, key=lambda r: r.get("create_index", 0))
            await self.apply(published_ports(r["manifest"] for r in records))

    async def apply(self, wanted: list[Published]) -> None:
        for entry in [e for e in self.gateways if e not in wanted]:
            gateway = self.gateways.pop(entry)
            await gateway.stop(1.0)
            log.info("unpublished %s on port %d", entry.service, entry.host_port)
        for entry in wanted:
            if entry not in self.gateways:
                await self.publish(entry)
        if not self.gateways:
            await self.leave()

    async def publish(self, entry: Published) -> None:
        self.host.follow_service(entry.service)
        if self.identity is None:
            self.identity = self.host.gateway_identity()
        gateway = IngressGateway({entry.service: (entry.host_port, entry.protocol)},
                                 self.host.node, self.host.zone, self.identity, self.bind)
        try:
            await gateway.start()
        except (OSError, MeshletError) as exc:  # logged; tried again on the next change
            log.warning("cannot publish %s on port %d: %s", entry.service, entry.host_port,
                        exc)
            return
        self.gateways[entry] = gateway
        gateway.apply(self.host.snapshot(gateway.bootstrap))
        log.info("published %s on %s:%d", entry.service, self.bind, entry.host_port)
        self.reach_replicas()

    def reach_replicas(self) -> None:
        """Have the host join the pods' overlay, once, while a gateway is published
        (again on a new snapshot, if the network did not exist yet)."""
        if self.joined or not self.gateways or (
                self.joining is not None and not self.joining.done()):
            return
        self.joining = asyncio.get_running_loop().create_task(self.join())

    async def join(self) -> None:
        """Until the host is on the network, or the network does not exist yet; each
        new failure is logged once (the same one again at debug level)."""
        network = self.host.pods.network
        backoff = Backoff(cap=30.0)
        last = ""
        while True:
            try:
                self.joined = await self.host.sandboxes.join(network)
                return
            except (MeshletError, OSError) as exc:
                level = logging.DEBUG if str(exc) == last else logging.WARNING
                last = str(exc)
                log.log(level, "the Services' gateways cannot join network %s yet (their "
                        "replicas on other hosts stay out of reach): %s", network, exc)
            await asyncio.sleep(backoff.next_delay())

    async def leave(self) -> None:
        if self.joining is not None:
            self.joining.cancel()
            await asyncio.gather(self.joining, return_exceptions=True)
            self.joining = None
        if self.joined:
            try:
                await self.host.sandboxes.leave(self.host.pods.network)
            except (MeshletError, OSError) as exc:  # tried again by the next change
                log.warning("could not take the host off network %s: %s",
                            self.host.pods.network, exc)
                return
            self.joined = False

    def push(self, service: str | None) -> None:
        """A new snapshot for the gateways of ``service`` (all if None)."""
        self.reach_replicas()
        for entry, gateway in self.gateways.items():
            if service is None or entry.service == service:
                gateway.apply(self.host.snapshot(gateway.bootstrap))

    def renewed(self) -> None:
        for gateway in self.gateways.values():
            tls = gateway.renewed_tls()
            if tls is not None:
                gateway.bootstrap = replace(gateway.bootstrap, tls=tls)
                gateway.apply(self.host.snapshot(gateway.bootstrap))

    async def stop(self) -> None:
        if self.task is not None:
            self.task.cancel()
            await asyncio.gather(self.task, return_exceptions=True)
            self.task = None
        for gateway in self.gateways.values():
            await gateway.stop(1.0)
        self.gateways.clear()
        await self.leave()


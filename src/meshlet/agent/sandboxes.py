"""The namespaces of mesh workloads: replicas of `up`-file services that name a
network. Each gets a namespace of its own (``ml-<node tag>-svc.<instance>``) with an
address from the network's pool, held by ``svc:<node>:<instance>`` so other hosts know
where it lives, an interface on the network's bridge (and tunnel), the embedded DNS,
and the virtual IPs of the services it calls on its loopback."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from meshlet.errors import ConfigError, MeshletError
from meshlet.net import bridge, dns_listener, names, netns
from meshlet.net.overlay_plan import mac_for, mesh_owner

if TYPE_CHECKING:
    from meshlet.agent.containers import ContainerRunner

log = logging.getLogger(__name__)


@dataclass
class Sandbox:
    """The network namespace a mesh workload (app and sidecar) runs in."""

    owner: str
    namespace: str
    network: str
    address: str
    dns: dns_listener.DnsEndpoint | None = None

    def wrap(self, argv: list[str]) -> list[str]:
        return ["ip", "netns", "exec", self.namespace, *argv]

    def record(self) -> dict[str, Any]:
        return {"networks": [self.network], "addresses": {self.network: self.address}}


class Sandboxes:
    """Opens and closes sandboxes with the container runner's plumbing (bridges,
    tunnels, DNS), under its lock, so the two never undo each other's links."""

    def __init__(self, runner: ContainerRunner) -> None:
        self.runner = runner
        self.boxes: dict[str, Sandbox] = {}  # by owner

    def networks(self) -> set[str]:
        return {box.network for box in self.boxes.values()}

    async def open(self, instance: str, network: str) -> Sandbox:
        runner = self.runner
        netns.require_root(f"{instance} on network {network!r}")
        owner = mesh_owner(runner.node, instance)
        await runner.cleaned.wait()
        async with runner.lock:
            info = await runner.client.network(network)
            if info["driver"] not in ("bridge", "overlay") or info["internal"]:
                raise ConfigError(f"network: {network!r} ({info['driver']}"
                                  f"{', internal' if info['internal'] else ''}) cannot carry "
                                  "mesh services: use a bridge or overlay network with a "
                                  "gateway", "network")
            runner.infos[network] = info
            assigned = await runner.client.address_assign(network, owner)
            box = Sandbox(owner, f"{runner.prefix}svc.{instance}", network,
                          assigned["address"])
            self.boxes[owner] = box
            try:
                await asyncio.to_thread(netns.create, box.namespace)
                prefix = int(info["subnet"].split("/")[1])
                await asyncio.to_thread(bridge.ensure_bridge, network, info["gateway"],
                                        prefix)
                mtu = await runner.ensure_tunnel(info)
                await asyncio.to_thread(bridge.attach, bridge.Attachment(
                    network, owner, box.namespace, "eth0", box.address, prefix,
                    info["gateway"], mac_for(box.address), mtu))
                await asyncio.to_thread(dns_listener.write_resolv_conf, box.namespace)
                me = box.record()
                box.dns = await dns_listener.serve(box.namespace, lambda name: names.resolve(
                    name, me, runner.directory, runner.vips))
            except BaseException:  # a failure, or the workload stopping meanwhile
                await self.close_locked(box)
                raise
            return box

    async def add_local_addresses(self, box: Sandbox, addresses: list[str]) -> None:
        """Put services' virtual IPs on the namespace's loopback, for its sidecar."""
        await asyncio.to_thread(netns.add_loopback_addresses, box.namespace, addresses)

    async def close(self, box: Sandbox) -> None:
        async with self.runner.lock:
            await self.close_locked(box)

    async def close_locked(self, box: Sandbox) -> None:
        self.boxes.pop(box.owner, None)
        if box.dns is not None:
            box.dns.close()
            box.dns = None
        await asyncio.to_thread(bridge.detach, box.network, box.owner)
        await asyncio.to_thread(netns.remove, box.namespace)
        await self.runner.drop_unused_bridges([box.network])
        try:
            await self.runner.client.address_release(box.network, box.owner)
        except MeshletError as exc:
            log.info("could not release %s's address: %s", box.owner, exc)

    async def release_leftover_addresses(self) -> None:
        """Give back the addresses this node's mesh workloads held in an earlier run
        (one that crashed could not); workloads starting now take theirs again."""
        mine = mesh_owner(self.runner.node, "")
        for network in await self.runner.client.networks():
            for owner in network["addresses"]:
                if owner.startswith(mine):
                    await self.runner.client.address_release(network["name"], owner)

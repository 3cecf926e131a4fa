"""The namespaces of mesh workloads: replicas of `up`-file services that name a
network. Each gets a namespace of its own (``ml-<node tag>-svc.<instance>``) with an
address from the network's pool, held by ``svc:<node>:<instance>`` so other hosts know
where it lives, an interface on the network's bridge (and tunnel) and the embedded
DNS (both through ``HostNetworks``), and the virtual IPs of the services it calls on
its loopback. On an overlay the host holds an address of its own too
(``host:<node>``, see ``net/overlay_plan.py``), the source of what it sends there."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import replace
from typing import Any

from meshlet.agent.host_networks import HostNetworks
from meshlet.agent.network_plan import Network
from meshlet.agent.workload_host import Sandbox
from meshlet.api.client import Client
from meshlet.errors import ConfigError, MeshletError, NotFound
from meshlet.net import netns
from meshlet.net.overlay_plan import host_owner, mesh_owner

log = logging.getLogger(__name__)


class Sandboxes:
    """Opens and closes sandboxes: an address from the control plane, the plumbing
    from the host's networks."""

    def __init__(self, client: Client, host: HostNetworks) -> None:
        self.client = client
        self.host = host

    def __repr__(self) -> str:
        return f"<Sandboxes {self.host.node}>"

    async def open(self, instance: str, network: str, loopback: Sequence[str] = ()
                   ) -> Sandbox:
        """A namespace on ``network`` for ``instance``, with ``loopback`` addresses (the
        virtual IPs its sidecar listens on) on its loopback. Raises ConfigError for a
        network that cannot carry mesh services, MeshletError, OSError."""
        host = self.host
        netns.require_root(f"{instance} on network {network!r}")
        owner = mesh_owner(host.node, instance)
        await host.wait_ready()
        info = await self.client.network(network)
        if info["driver"] not in ("bridge", "overlay") or info["internal"]:
            raise ConfigError(f"network: {network!r} ({info['driver']}"
                              f"{', internal' if info['internal'] else ''}) cannot carry "
                              "mesh services: use a bridge or overlay network with a "
                              "gateway", "network")
        plumbing = await self.plumbing(info)
        assigned = await self.client.address_assign(network, owner)
        box = Sandbox(owner, f"{host.prefix}svc.{instance}", network, assigned["address"])
        record = box.record()
        try:
            await host.open(owner, box.namespace, {network: box.address},
                            {network: plumbing}, lambda: record, loopback)
        except BaseException:  # a failure, or the workload stopping meanwhile
            await self.close(box)
            raise
        return box

    async def plumbing(self, info: dict[str, Any]) -> Network:
        """What attaching needs of network record ``info``; on an overlay that reaches
        other hosts, with the host's own address there (see overlay_plan: host:NODE)."""
        host = self.host
        host.view.note_network(info)
        plumbing = Network.from_record(info)
        if info["driver"] == "overlay" and host.tunnels:
            held = await self.client.address_assign(info["name"], host_owner(host.node))
            plumbing = replace(plumbing, local=held["address"])
        return plumbing

    async def join(self, network: str) -> bool:
        """Put the host itself on overlay ``network`` (``HostNetworks.join``), for what
        the agent sends there while no workload of the network runs here. False if
        the network does not exist (yet); a network not an overlay needs nothing.
        Raises MeshletError."""
        host = self.host
        if not host.tunnels or not netns.can_manage():
            return True  # one host, or no links at all: every workload is local
        await host.wait_ready()
        try:
            info = await self.client.network(network)
        except NotFound:
            return False
        if info["driver"] == "overlay":
            await host.join(await self.plumbing(info))
        return True

    async def leave(self, network: str) -> None:
        await self.host.leave(network)

    async def close(self, box: Sandbox) -> None:
        await self.host.close(box.owner)
        try:
            await self.client.address_release(box.network, box.owner)
        except MeshletError as exc:
            log.info("could not release %s's address: %s", box.owner, exc)

    async def release_leftover_addresses(self) -> None:
        """Give back the addresses this node's mesh workloads (and the host itself) held
        in an earlier run (one that crashed could not); workloads starting now take
        theirs again."""
        mine = mesh_owner(self.host.node, "")
        for network in await self.client.networks():
            for owner in network["addresses"]:
                if owner.startswith(mine) or owner == host_owner(self.host.node):
                    await self.client.address_release(network["name"], owner)

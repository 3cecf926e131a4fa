"""The host side of this node's networks: the sandboxes (network namespaces) of its
containers and mesh workloads, their interfaces on each network's bridge (and an
overlay's tunnel), their embedded DNS, the overlays' remote entries, and the cleanup
after an earlier run.

The container runner and the mesh workloads' sandboxes both go through one
``HostNetworks``, under its lock, so neither undoes the other's links: a network's
bridge lives while a sandbox of this host is on it. Interfaces are planned
(``network_plan.plan``, pure), then applied through the ``Kernel``
(``agent/kernel.py``), whose every operation is idempotent. An interface is recorded
before it is made, so closing a sandbox after a partial failure removes what was half
made; ``open`` rolls back by itself when it fails.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

from meshlet.agent.cluster_view import ClusterView, Record
from meshlet.agent.kernel import Closable, Kernel, LinuxKernel
from meshlet.agent.network_plan import (
    Attach,
    Detach,
    Interface,
    Network,
    Op,
    Underlay,
    needs_tunnel,
    plan,
)
from meshlet.net import netns


def namespace_prefix(node: str) -> str:
    """The start of every namespace name of ``node``'s sandboxes."""
    return f"{netns.PREFIX}{hashlib.sha1(node.encode()).hexdigest()[:6]}-"


@dataclass
class Plumbed:
    """A sandbox as this host set it up: its namespace, interfaces and DNS."""

    owner: str
    namespace: str
    interfaces: list[Interface] = field(default_factory=list)  # in the order made
    dns: Closable | None = None


class HostNetworks:
    def __init__(self, node: str, address: str = "127.0.0.1",
                 kernel: Kernel | None = None) -> None:
        self.node = node
        self.address = address  # where other hosts reach this one: the tunnel end
        self.kernel: Kernel = kernel or LinuxKernel()
        self.prefix = namespace_prefix(node)
        self.view = ClusterView(node)
        self.sandboxes: dict[str, Plumbed] = {}   # by owner
        self.lock = asyncio.Lock()
        self.ready = asyncio.Event()  # an earlier run's leftovers are gone: open may make

    def __repr__(self) -> str:
        return f"<HostNetworks {self.node} sandboxes={sorted(self.sandboxes)}>"

    @property
    def tunnels(self) -> bool:
        """Whether overlay networks reach other hosts (not when on loopback only)."""
        return not self.address.startswith("127.")

    def networks_of(self, owner: str) -> list[str]:
        """The networks sandbox ``owner`` is on, in interface order ([] if none)."""
        box = self.sandboxes.get(owner)
        return [i.network for i in box.interfaces] if box is not None else []

    def in_use(self, but: str = "") -> set[str]:
        """The networks this host's sandboxes are on (but ``but``'s)."""
        return {i.network for owner, box in self.sandboxes.items() if owner != but
                for i in box.interfaces}

    async def clean_leftovers(self) -> None:
        """Remove this node's namespaces from an earlier run (their veths go with them)
        and every meshlet bridge and tunnel (made again as sandboxes need them)."""
        await asyncio.to_thread(self.kernel.remove_leftovers, self.prefix)

    # -- a sandbox: ADD, change, DEL ----------------------------------------------------

    async def open(self, owner: str, namespace: str, want: Mapping[str, str],
                   networks: Mapping[str, Network], me: Callable[[], Record | None],
                   loopback: Sequence[str] = ()) -> None:
        """Make sandbox ``owner``: the namespace (with ``loopback`` addresses), an
        interface on each network of ``want`` (network -> address, in interface order)
        and the embedded DNS, answering names as the workload whose record ``me()``
        gives sees them. On failure or cancellation, what was made is removed again.
        Raises MeshletError, OSError."""
        async with self.lock:
            assert owner not in self.sandboxes, f"sandbox {owner!r} is open already"
            box = self.sandboxes[owner] = Plumbed(owner, namespace)
            try:
                await asyncio.to_thread(self.kernel.create_namespace, namespace, loopback)
                await self.connect_locked(box, want, networks)
                box.dns = await self.kernel.serve_dns(namespace, self.view.lookup(me))
            except BaseException:
                await self.close_locked(owner)
                raise

    async def connect(self, owner: str, want: Mapping[str, str],
                      networks: Mapping[str, Network]) -> None:
        """Give open sandbox ``owner`` interfaces on exactly the networks of ``want``."""
        async with self.lock:
            await self.connect_locked(self.sandboxes[owner], want, networks)

    async def connect_locked(self, box: Plumbed, want: Mapping[str, str],
                             networks: Mapping[str, Network]) -> None:
        underlay = None
        if self.tunnels and needs_tunnel(want, networks):
            underlay = Underlay(self.address, await asyncio.to_thread(
                self.kernel.underlay_mtu, self.address))
        ops = plan(box.owner, box.namespace, box.interfaces, want, networks,
                   self.in_use(but=box.owner), underlay)
        await self.apply_locked(box, ops)

    async def close(self, owner: str) -> None:
        """Remove sandbox ``owner``: DNS, interfaces, namespace, and the bridges (and
        tunnels) no other sandbox is on. One not open is fine."""
        async with self.lock:
            await self.close_locked(owner)

    async def close_locked(self, owner: str) -> None:
        box = self.sandboxes.pop(owner, None)
        if box is None:
            return
        if box.dns is not None:
            box.dns.close()
            box.dns = None
        await self.apply_locked(box, plan(owner, box.namespace, box.interfaces, {}, {},
                                          self.in_use(), None))
        await asyncio.to_thread(self.kernel.remove_namespace, box.namespace)

    async def apply_locked(self, box: Plumbed, ops: list[Op]) -> None:
        for op in ops:
            if isinstance(op, Attach):  # recorded first: a half-made one is removed too
                box.interfaces.append(op.interface)
            await asyncio.to_thread(self.kernel.apply, op)
            if isinstance(op, Detach):
                box.interfaces = [i for i in box.interfaces if i.network != op.network]

    # -- overlays -----------------------------------------------------------------------

    async def program_overlays(self) -> None:
        """Set each local overlay's forwarding and neighbour entries from the view: the
        workloads on other hosts, through those hosts' tunnel ends. Raises
        NetworkError."""
        if not self.tunnels:
            return
        async with self.lock:
            for network, wanted in self.view.overlays(self.in_use()).items():
                await asyncio.to_thread(self.kernel.program, network, wanted)

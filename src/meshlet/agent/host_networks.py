"""The host side of this node's networks: the sandboxes (network namespaces) of its
containers and mesh workloads, their interfaces on each network's bridge (and an
overlay's tunnel), their embedded DNS, the overlays' remote entries, and the cleanup
after an earlier run.

The container runner and the mesh workloads' sandboxes both go through one
``HostNetworks``, under its lock, so neither undoes the other's links: a network's
bridge lives while a sandbox of this host is on it, or while the host joined it itself
(``join``: the agent's gateways reach an overlay's workloads on other hosts).
Interfaces are planned (``network_plan.plan``, pure), then applied through the
``Kernel`` (``agent/kernel.py``), whose every operation is idempotent.

What failed is made again by the next call: an interface is recorded before it is
made and marked done after, so an attach that failed is planned again (detached, then
attached) by the next ``connect`` and removed by ``close``; a sandbox whose close
failed keeps its record, and every later call finishes that close first; a bridge or
tunnel made for a network that then got no interface is removed again. ``open`` rolls
back by itself when it fails. A blocking kernel call runs in a worker thread, which
cannot be stopped: a call cancelled meanwhile waits for it to end and records what it
did before the cancellation goes on, so nothing else touches those links while it runs.

A network removed from the cluster loses its links here, whoever made them: the
networks watch hands each answer to ``set_networks``, which notes the networks that were
there before and are no longer, and ``remove_gone_networks`` removes their tunnels,
bridges and the veths still on them (a runtime's containers through meshlet-cni, whose
bridge this host's sandboxes may never have used). A network holds no lease when it is
removed, so nothing still plugged in is in use. ``clear`` does the same for every
meshlet link when the agent stops (and ``clean_leftovers`` at the next start).

The host is usable once ``prepared``: ``wait_ready`` returns then, or raises if
preparing it failed.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

from meshlet.agent.cluster_view import ClusterView, Record
from meshlet.agent.kernel import Closable, Kernel, LinuxKernel, in_thread, run_to_end
from meshlet.agent.network_plan import (
    Attach,
    Detach,
    EnsureBridge,
    EnsureTunnel,
    Interface,
    Network,
    Op,
    RemoveNetwork,
    Underlay,
    describe,
    host_side,
    needs_tunnel,
    plan,
)
from meshlet.errors import MeshletError, NetworkError
from meshlet.net import netns

log = logging.getLogger(__name__)


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
    unfinished: set[str] = field(default_factory=set)  # networks whose attach may be half
    closing: bool = False  # a close failed part way: finished by the next call


class HostNetworks:
    def __init__(self, node: str, address: str = "127.0.0.1",
                 kernel: Kernel | None = None) -> None:
        self.node = node
        self.address = address  # where other hosts reach this one: the tunnel end
        self.kernel: Kernel = kernel or LinuxKernel()
        self.prefix = namespace_prefix(node)
        self.view = ClusterView(node)
        self.sandboxes: dict[str, Plumbed] = {}   # by owner
        # The overlays the host itself is on without a sandbox of its own (``join``).
        self.joined: set[str] = set()
        self.lock = asyncio.Lock()
        self.ready = asyncio.Event()  # prepared (or that failed, and ``failure`` says why)
        self.failure: str | None = None
        self.known: set[str] | None = None  # the networks of the last answer (None: none yet)
        self.gone: set[str] = set()  # removed from the cluster, links not yet removed here

    def __repr__(self) -> str:
        return f"<HostNetworks {self.node} sandboxes={sorted(self.sandboxes)}>"

    @property
    def tunnels(self) -> bool:
        """Whether overlay networks reach other hosts (not when on loopback only)."""
        return not self.address.startswith("127.")

    def networks_of(self, owner: str) -> list[str]:
        """The networks sandbox ``owner`` is fully on, in interface order ([] if none,
        or closing): a reconcile that finds one missing connects again."""
        box = self.sandboxes.get(owner)
        if box is None or box.closing:
            return []
        return [i.network for i in box.interfaces if i.network not in box.unfinished]

    def in_use(self, but: str = "") -> set[str]:
        """The networks this host's sandboxes are on, even half (but ``but``'s), and
        those the host joined itself."""
        return self.joined | {i.network for owner, box in self.sandboxes.items()
                              if owner != but for i in box.interfaces}

    # -- preparing the host -------------------------------------------------------------

    async def clean_leftovers(self) -> None:
        """Remove this node's namespaces from an earlier run (their veths go with them)
        and every meshlet bridge and tunnel (made again as sandboxes need them). Raises
        NetworkError."""
        await in_thread("remove an earlier run's leftovers", self.kernel.remove_leftovers,
                        self.prefix)

    async def clear(self) -> None:
        """When the agent stops, after its sandboxes: remove this node's namespaces
        left and every meshlet link of the host, those meshlet-cni made included (the
        next start would, and a bridge left meanwhile routes for no one). Raises
        NetworkError."""
        async with self.lock:
            await self.finish_closing_locked()
            await in_thread("remove this host's links", self.kernel.remove_leftovers,
                            self.prefix)
            self.gone.clear()
            self.joined.clear()

    def prepared(self, failure: str | None = None) -> None:
        """The host is ready for sandboxes, or (``failure``: why) never will be."""
        self.failure = failure
        self.ready.set()

    async def wait_ready(self) -> None:
        """Until the host is prepared. Raises NetworkError if preparing it failed."""
        await self.ready.wait()
        self.raise_if_failed()

    def raise_if_failed(self) -> None:
        if self.failure is not None:
            raise NetworkError(f"this host's networks are not ready: {self.failure}")

    # -- a sandbox: ADD, change, DEL ----------------------------------------------------

    async def open(self, owner: str, namespace: str, want: Mapping[str, str],
                   networks: Mapping[str, Network], me: Callable[[], Record | None],
                   loopback: Sequence[str] = ()) -> None:
        """Make sandbox ``owner``: the namespace (with ``loopback`` addresses), an
        interface on each network of ``want`` (network -> address, in interface order)
        and the embedded DNS, answering names as the workload whose record ``me()``
        gives sees them. On failure or cancellation, what was made is removed again.
        An earlier close of ``owner`` that failed is finished first. Raises
        MeshletError, OSError."""
        async with self.lock:
            self.raise_if_failed()
            earlier = self.sandboxes.get(owner)
            if earlier is not None:
                assert earlier.closing, f"sandbox {owner!r} is open already"
                await self.close_locked(earlier)
            await self.finish_closing_locked()
            box = self.sandboxes[owner] = Plumbed(owner, namespace)
            try:
                await in_thread(f"make namespace {namespace!r}",
                                self.kernel.create_namespace, namespace, loopback)
                await self.connect_locked(box, want, networks)
                box.dns = await self.kernel.serve_dns(namespace, self.view.lookup(me))
            except BaseException:
                try:
                    await self.close_locked(box)
                except (MeshletError, OSError) as exc:  # kept: the next call retries it
                    log.warning("could not yet remove the half-made sandbox %s: %s",
                                owner, exc)
                raise

    async def connect(self, owner: str, want: Mapping[str, str],
                      networks: Mapping[str, Network]) -> None:
        """Give open sandbox ``owner`` interfaces on exactly the networks of ``want``
        (an attach that failed before is made again). Raises MeshletError."""
        async with self.lock:
            await self.finish_closing_locked()
            await self.connect_locked(self.sandboxes[owner], want, networks)

    async def connect_locked(self, box: Plumbed, want: Mapping[str, str],
                             networks: Mapping[str, Network]) -> None:
        underlay = None
        if self.tunnels and needs_tunnel(want, networks):
            underlay = await self.underlay()
        ops = plan(box.owner, box.namespace, box.interfaces, want, networks,
                   self.in_use(but=box.owner), underlay, box.unfinished)
        await self.apply_locked(box, ops)

    async def underlay(self) -> Underlay:
        return Underlay(self.address, await in_thread(
            "read the underlay's MTU", self.kernel.underlay_mtu, self.address))

    # -- the host itself on an overlay --------------------------------------------------

    async def join(self, network: Network) -> None:
        """Put the host itself on overlay ``network`` (``network.local``: its address
        there) with no sandbox of its own: its bridge, its tunnel and their entries, as
        a sandbox's first attach makes them. A gateway in the agent reaches the
        overlay's workloads on other hosts that way while none runs here, as
        kube-proxy reaches every node's pods. Joined already, or a host without
        tunnels: nothing to do. Raises MeshletError."""
        async with self.lock:
            self.raise_if_failed()
            await self.finish_closing_locked()
            if not self.tunnels or network.name in self.joined:
                return
            ops = host_side(network, await self.underlay())
            self.joined.add(network.name)
            try:
                # As a sandbox's ops are (the tunnel gets its entries), with no sandbox
                # on record: the host's bridge and tunnel have no interface of their own.
                await self.apply_locked(Plumbed(network.name, ""), ops)
            except BaseException:
                self.joined.discard(network.name)
                await self.roll_back_locked(network.name)
                raise

    async def leave(self, network: str) -> None:
        """The host no longer needs to be on ``network`` itself: its bridge and tunnel
        go unless a sandbox here is on it. If removing them fails, the host stays
        joined (its entries kept current) until a later ``leave`` or ``clear``. Raises
        MeshletError."""
        async with self.lock:
            await self.finish_closing_locked()
            if network not in self.joined:
                return
            self.joined.discard(network)
            if network not in self.in_use():
                op = RemoveNetwork(network)
                try:
                    await in_thread(describe(op), self.kernel.apply, op)
                except BaseException:
                    self.joined.add(network)
                    raise

    async def close(self, owner: str) -> None:
        """Remove sandbox ``owner``: DNS, interfaces, namespace, and the bridges (and
        tunnels) no other sandbox is on. One not open is fine. If this fails, the
        sandbox stays on record, closing, and the next call of any kind retries it.
        Raises MeshletError, OSError."""
        async with self.lock:
            box = self.sandboxes.get(owner)
            if box is not None:
                await self.close_locked(box)
            await self.finish_closing_locked()

    async def close_locked(self, box: Plumbed) -> None:
        """Undo ``box``; its record goes only once all of it is gone."""
        box.closing = True
        if box.dns is not None:
            box.dns.close()
            box.dns = None
        await self.apply_locked(box, plan(box.owner, box.namespace, box.interfaces, {}, {},
                                          self.in_use(but=box.owner), None))
        _, cancelled = await run_to_end(f"remove namespace {box.namespace!r}",
                                        self.kernel.remove_namespace, box.namespace)
        del self.sandboxes[box.owner]
        if cancelled:
            raise asyncio.CancelledError()

    async def finish_closing_locked(self) -> None:
        """Retry the closes that failed; one failing again waits for the next call."""
        for box in [b for b in self.sandboxes.values() if b.closing]:
            try:
                await self.close_locked(box)
            except (MeshletError, OSError) as exc:
                log.info("sandbox %s is still not removed (retried later): %s",
                         box.owner, exc)

    async def apply_locked(self, box: Plumbed, ops: list[Op]) -> None:
        for op in ops:
            if isinstance(op, Attach):  # recorded first: a half-made one is removed too
                box.interfaces.append(op.interface)
                box.unfinished.add(op.network)
            try:
                _, cancelled = await run_to_end(describe(op), self.kernel.apply, op)
            except BaseException:  # failed (a cancellation meanwhile raised instead)
                if isinstance(op, EnsureBridge | EnsureTunnel):
                    await self.roll_back_locked(op.network)
                raise
            if isinstance(op, Attach):
                box.unfinished.discard(op.network)
            elif isinstance(op, Detach):
                box.interfaces = [i for i in box.interfaces if i.network != op.network]
                box.unfinished.discard(op.network)
            if cancelled:
                raise asyncio.CancelledError()
            if isinstance(op, EnsureTunnel):  # one made now is empty: fill it at once
                await self.program_locked(op.network)

    async def roll_back_locked(self, network: str) -> None:
        """A bridge or tunnel failed part way: if no sandbox here is on ``network``,
        remove what was made of it (its tunnel, its bridge)."""
        if network in self.in_use():
            return
        op = RemoveNetwork(network)
        try:
            await in_thread(describe(op), self.kernel.apply, op)
        except (MeshletError, OSError) as exc:
            log.warning("could not roll back network %r: %s", network, exc)

    # -- networks removed from the cluster ----------------------------------------------

    def set_networks(self, found: Sequence[Record]) -> None:
        """A networks watch answer: into the view, and the networks it no longer has
        noted for ``remove_gone_networks`` (one made again under the same name is
        kept: its bridge is the new one's)."""
        self.view.set_networks(found)
        now = {str(n["name"]) for n in found}
        if self.known is not None:
            self.gone |= self.known - now
        self.gone -= now
        self.known = now

    async def remove_gone_networks(self) -> None:
        """Remove the links of the networks removed from the cluster, but of one a
        sandbox here is still on (its close removes them). One that fails is retried by
        the next call. Raises NetworkError (the first failure) once it tried them all."""
        async with self.lock:
            await self.finish_closing_locked()
            if not self.gone:
                return
            self.joined -= self.gone
            in_use = self.in_use()
            failures: list[NetworkError] = []
            for network in sorted(self.gone - in_use):
                try:
                    await in_thread(f"remove the links of network {network!r}",
                                    self.kernel.remove_network, network)
                except NetworkError as exc:
                    failures.append(exc)
                    continue
                self.gone.discard(network)
                log.info("network %s was removed: its links here are gone", network)
            if failures:
                raise failures[0]

    # -- overlays -----------------------------------------------------------------------

    async def program_overlays(self) -> None:
        """Set each local overlay's forwarding and neighbour entries from the view: the
        workloads on other hosts, through those hosts' tunnel ends. Raises
        NetworkError."""
        async with self.lock:
            await self.finish_closing_locked()
            if not self.tunnels:
                return
            for network in sorted(self.in_use()):
                await self.program_locked(network)

    async def program_locked(self, network: str) -> None:
        """Set ``network``'s tunnel entries from the view (if it is an overlay). A
        tunnel made (again) for a sandbox needs them then, not at the next change of
        the nodes or networks watched, which may be long in coming: until then this
        host reaches no workload of the overlay on another host."""
        for name, wanted in self.view.overlays({network}).items():
            await in_thread(f"program the tunnel of network {name!r}",
                            self.kernel.program, name, wanted)

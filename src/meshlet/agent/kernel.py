"""The kernel calls ``HostNetworks`` makes, behind a small Protocol so that a test can
stand in for them (``tests/unit/test_host_networks.py`` has an in-memory twin).

``LinuxKernel`` makes them through ``net/`` (netlink, `ip netns`, the embedded DNS's
sockets). Its synchronous methods block: call them from a worker thread, since
pyroute2 drives an event loop of its own, which cannot run inside the agent's
(``run_to_end`` and ``in_thread`` do, and wait for a call to end even when cancelled).
Each is idempotent: what exists is kept, what is gone is fine.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from typing import Protocol, TypeVar, assert_never

from pyroute2.netlink.exceptions import NetlinkError

from meshlet.agent.network_plan import (
    Attach,
    Detach,
    EnsureBridge,
    EnsureTunnel,
    Op,
    RemoveNetwork,
    describe,
)
from meshlet.errors import MeshletError, NetworkError
from meshlet.net import bridge, dns_listener, netns, vxlan
from meshlet.net.dns import Lookup
from meshlet.net.overlay_plan import Remote

log = logging.getLogger(__name__)
T = TypeVar("T")


async def run_to_end(what: str, call: Callable[..., T], *args: object) -> tuple[T, bool]:
    """``call(*args)`` in a worker thread, to its end even if the await is cancelled:
    a thread cannot be stopped, and the caller must record what it did before anything
    else touches the same links. Returns its result and whether the await was cancelled
    meanwhile (the caller records the outcome, then raises CancelledError); raises what
    ``call`` raises (CancelledError instead, if cancelled meanwhile)."""
    running = asyncio.ensure_future(asyncio.to_thread(call, *args))
    cancelled = False
    while True:
        try:
            return await asyncio.shield(running), cancelled
        except asyncio.CancelledError:
            if not cancelled:
                log.info("cancelled while the kernel works to %s: waiting for it to end",
                         what)
            cancelled = True
        except Exception as exc:
            if cancelled:
                raise asyncio.CancelledError() from exc
            raise


async def in_thread(what: str, call: Callable[..., T], *args: object) -> T:
    """``run_to_end``, for a call whose outcome needs no record."""
    result, cancelled = await run_to_end(what, call, *args)
    if cancelled:
        raise asyncio.CancelledError()
    return result


class Closable(Protocol):
    def close(self) -> None: ...


class Kernel(Protocol):
    def create_namespace(self, name: str, loopback: Sequence[str]) -> None:
        """The namespace with its loopback up, holding ``loopback`` addresses, and its
        resolver pointed at the embedded DNS. Raises MeshletError."""

    def remove_namespace(self, name: str) -> None: ...

    def apply(self, op: Op) -> None:
        """Perform one planned operation; raises NetworkError."""

    def underlay_mtu(self, local: str) -> int:
        """The MTU of overlay links from ``local``; raises MeshletError (NetworkError
        when the kernel refuses)."""

    def program(self, network: str, wanted: set[Remote]) -> None:
        """Make the network's tunnel entries exactly ``wanted``; raises NetworkError."""

    def remove_network(self, network: str) -> None:
        """Remove a network that no longer exists from this host: its tunnel, its
        bridge and the veth pairs still on it, whoever made them (this host's sandboxes
        or a container runtime through meshlet-cni). Raises NetworkError."""

    def remove_leftovers(self, prefix: str) -> None:
        """Remove the namespaces whose names start with ``prefix``, and every meshlet
        link: bridges, tunnels, and the host ends of veth pairs left in other namespaces
        (a runtime's containers, put there by meshlet-cni); as many as it can, then
        raises NetworkError naming those it could not remove."""

    async def serve_dns(self, namespace: str, lookup: Lookup) -> Closable:
        """The embedded DNS inside ``namespace``; raises OSError."""


class LinuxKernel:
    def __repr__(self) -> str:
        return "<LinuxKernel>"

    def create_namespace(self, name: str, loopback: Sequence[str]) -> None:
        netns.create(name)
        netns.add_loopback_addresses(name, list(loopback))
        dns_listener.write_resolv_conf(name)

    def remove_namespace(self, name: str) -> None:
        netns.remove(name)

    def apply(self, op: Op) -> None:
        try:
            if isinstance(op, EnsureBridge):
                bridge.ensure_bridge(op.network, op.gateway, op.prefix, op.local)
            elif isinstance(op, EnsureTunnel):
                vxlan.ensure_vxlan(op.network, op.vni, op.local, op.mtu)
            elif isinstance(op, Attach):
                bridge.attach(bridge.Attachment(
                    op.network, op.owner, op.namespace, op.interface.ifname, op.address,
                    op.prefix, op.gateway, op.mac, op.mtu))
            elif isinstance(op, Detach):
                bridge.detach(op.network, op.owner)
            elif isinstance(op, RemoveNetwork):
                # Kept while a port is on it: a runtime's container (meshlet-cni) is
                # not this host's sandbox, and still uses the network.
                bridge.delete_link(vxlan.vxlan_name(op.network))
                bridge.remove_bridge_if_unused(op.network)
            else:
                assert_never(op)
        except (NetlinkError, OSError) as exc:
            raise NetworkError(f"cannot {describe(op)}: {exc}") from exc

    def remove_network(self, network: str) -> None:
        try:
            bridge.delete_link(vxlan.vxlan_name(network))
            bridge.remove_bridge_and_ports(network)
        except (NetlinkError, OSError) as exc:
            raise NetworkError(f"cannot remove the links of removed network {network!r}: "
                               f"{exc}") from exc

    def underlay_mtu(self, local: str) -> int:
        try:
            return vxlan.mtu_for(local)
        except (NetlinkError, OSError) as exc:
            raise NetworkError(f"cannot read the MTU of the interface holding {local} "
                               f"(the agent's advertised address): {exc}") from exc

    def program(self, network: str, wanted: set[Remote]) -> None:
        try:
            vxlan.program(network, wanted)
        except (NetlinkError, OSError) as exc:
            raise NetworkError(f"cannot program the tunnel of network {network!r}: "
                               f"{exc}") from exc

    def remove_leftovers(self, prefix: str) -> None:
        if not netns.can_manage():
            return
        failed: list[str] = []
        for name in netns.ours():
            if name.startswith(prefix):
                log.info("removing leftover namespace %s", name)
                try:
                    netns.remove(name)
                except (MeshletError, NetlinkError, OSError) as exc:
                    failed.append(f"namespace {name!r}: {exc}")
        try:
            links = bridge.ours()
        except (NetlinkError, OSError) as exc:
            raise NetworkError(f"cannot list this host's links: {exc}") from exc
        for name in links:  # veths whose namespace is gone went with it
            log.info("removing leftover link %s", name)
            try:
                bridge.delete_link(name)
            except (NetlinkError, OSError) as exc:
                failed.append(f"link {name!r}: {exc}")
        if failed:
            raise NetworkError(f"cannot remove {len(failed)} leftover(s) of an earlier "
                               f"run: {'; '.join(failed)}")

    async def serve_dns(self, namespace: str, lookup: Lookup) -> Closable:
        return await dns_listener.serve(namespace, lookup)

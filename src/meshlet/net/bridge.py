"""The bridge driver: a Linux bridge per network, a veth pair per attachment, as
Docker's bridge driver does, programmed through netlink (pyroute2).

Names are derived from the network and workload names (a hash keeps them within the
15 characters Linux allows): bridges ``mlb…``, host ends of veth pairs ``mlv…``, so
cleanup finds what meshlet made. Each bridge has IPv4 forwarding off, so the host
routes no packet from one network into another, nor out: networks are isolated
without iptables. An ``internal`` network also has no gateway address on the bridge
and its workloads get no default route.
"""

from __future__ import annotations

import contextlib
import hashlib
import ipaddress
import os
from dataclasses import dataclass
from pathlib import Path

from pyroute2 import IPRoute
from pyroute2.netlink.exceptions import NetlinkError

from meshlet.errors import NetworkError
from meshlet.net import netns
from meshlet.net.overlay_plan import mac_for

BRIDGE_PREFIX = "mlb"
VETH_PREFIX = "mlv"
VXLAN_PREFIX = "mlx"


def short(prefix: str, *parts: str) -> str:
    digest = hashlib.sha1("\0".join(parts).encode()).hexdigest()
    return prefix + digest[:15 - len(prefix)]


def bridge_name(network: str) -> str:
    return short(BRIDGE_PREFIX, network)


def veth_name(network: str, workload: str) -> str:
    return short(VETH_PREFIX, network, workload)


@dataclass(frozen=True)
class Attachment:
    """One workload's interface on one network."""

    network: str
    workload: str
    namespace: str       # a name in /run/netns, or a path
    ifname: str          # inside the namespace: eth0, eth1, …
    address: str
    prefix: int
    gateway: str | None  # None: no default route through this network
    mac: str | None = None   # of the interface inside; None: the kernel's choice
    mtu: int | None = None   # of both ends; None: the kernel's default


def set_forwarding(ifname: str, enabled: bool) -> None:
    Path(f"/proc/sys/net/ipv4/conf/{ifname}/forwarding").write_text("1" if enabled else "0")


def ensure_bridge(network: str, gateway: str | None, prefix: int,
                  local: str | None = None) -> str:
    """Create the network's bridge (idempotent); returns its name. With ``local`` (this
    host's own address on an overlay), the bridge holds it too and what the host sends
    on the network comes from it (``hold_host_address``). A bridge made here is removed
    again if a later step fails (a half-made one would pass for made). Raises
    NetlinkError, OSError."""
    name = bridge_name(network)
    with IPRoute() as ip:
        found = ip.link_lookup(ifname=name)
        made = not found
        if made:
            ip.link("add", ifname=name, kind="bridge")
            found = ip.link_lookup(ifname=name)
        index = found[0]
        try:
            if gateway is not None:
                have = {a.get_attr("IFA_ADDRESS") for a in ip.get_addr(index=index)}
                if gateway not in have:
                    ip.addr("add", index=index, address=gateway, prefixlen=prefix)
            pin_address(ip, index, name)
            ip.link("set", index=index, state="up")
            set_forwarding(name, False)
            if local is not None:  # a route needs its link up
                hold_host_address(ip, index, local, prefix)
        except BaseException:
            if made:
                with contextlib.suppress(NetlinkError):
                    ip.link("del", index=index)
            raise
    return name


def hold_host_address(ip: IPRoute, index: int, local: str, prefix: int) -> None:
    """Put this host's own overlay address on the bridge and make it the source of the
    host's traffic to the network's subnet. The gateway address is on every host's
    bridge: a workload on another host answers it to its own host, so a connection
    from that address never opens. The bridge takes the MAC that other hosts' entries
    give ``local`` (``overlay_plan.mac_for``) when it takes the address, so their
    answers come up to this host rather than being flooded on its bridge."""
    have = {a.get_attr("IFA_ADDRESS") for a in ip.get_addr(index=index)}
    if local not in have:
        ip.link("set", index=index, address=mac_for(local))
        ip.addr("add", index=index, address=local, prefixlen=32)
    subnet = ipaddress.ip_network(f"{local}/{prefix}", strict=False)
    ip.route("replace", dst=str(subnet.network_address), dst_len=prefix, oif=index,
             prefsrc=local, scope=LINK_SCOPE, proto=KERNEL_PROTO)


LINK_SCOPE = 253    # rtnetlink's RT_SCOPE_LINK
KERNEL_PROTO = 2    # RTPROT_KERNEL: as the route the kernel makes for an address
NET_ADDR_SET = "3"  # a link's addr_assign_type once its address was set by hand


def pin_address(ip: IPRoute, index: int, name: str) -> None:
    """Give the bridge its own MAC address for good. A bridge left to choose takes the
    lowest of its ports' and changes it when a port with a lower one joins: the gateway
    address every workload has cached would move under them each time a workload
    starts, and their packets to it would go nowhere until their ARP entries expire."""
    sysfs = Path("/sys/class/net", name)  # this namespace's, where the index agrees
    with contextlib.suppress(OSError, ValueError):
        if int((sysfs / "ifindex").read_text()) == index and \
                (sysfs / "addr_assign_type").read_text().strip() == NET_ADDR_SET:
            return  # pinned already: setting it again would flush the ARP cache
    address = ip.get_links(index)[0].get_attr("IFLA_ADDRESS")
    ip.link("set", index=index, address=address)


def ours() -> list[str]:
    """The links meshlet made in this namespace: bridges, host ends of veths, VXLAN
    devices."""
    with IPRoute() as ip:
        names = [link.get_attr("IFLA_IFNAME") for link in ip.get_links()]
    return sorted(n for n in names if n.startswith((BRIDGE_PREFIX, VETH_PREFIX, VXLAN_PREFIX)))


def remove_bridge(network: str) -> None:
    delete_link(bridge_name(network))


def link_exists(name: str) -> bool:
    with IPRoute() as ip:
        return bool(ip.link_lookup(ifname=name))


def remove_bridge_if_unused(network: str) -> None:
    """Remove the network's bridge unless a port is still attached to it (another
    workload's veth, plugged in meanwhile, or a container runtime's through
    meshlet-cni)."""
    if not ports(network):
        delete_link(bridge_name(network))


def ports(network: str) -> list[str]:
    """The links plugged into the network's bridge ([] if it has none, or no bridge)."""
    with IPRoute() as ip:
        found = ip.link_lookup(ifname=bridge_name(network))
        if not found:
            return []
        return sorted(link.get_attr("IFLA_IFNAME") for link in ip.get_links()
                      if link.get_attr("IFLA_MASTER") == found[0])


def remove_bridge_and_ports(network: str) -> None:
    """Remove the network's bridge and the veth pairs meshlet made on it: a network
    that is gone holds no lease, so whatever is still plugged in belongs to a container
    whose CNI DEL never came (its runtime was killed, or forgot it). Idempotent."""
    for name in ports(network):
        if name.startswith(VETH_PREFIX):
            delete_link(name)
    delete_link(bridge_name(network))


def delete_link(name: str) -> None:
    with IPRoute() as ip:
        found = ip.link_lookup(ifname=name)
        if found:
            try:
                ip.link("del", index=found[0])
            except NetlinkError as exc:
                if exc.code != 19:  # ENODEV: gone meanwhile
                    raise


def one_link(ip: IPRoute, name: str, missing: str) -> int:
    """The index of link ``name``; raises NetworkError(``missing``) if there is none."""
    found = ip.link_lookup(ifname=name)
    if not found:
        raise NetworkError(missing)
    return int(found[0])


def attach(att: Attachment) -> None:
    """Plug the workload's namespace into the network's bridge (idempotent). Raises
    NetworkError if a link it needs is missing or elsewhere, NetlinkError."""
    host_end = veth_name(att.network, att.workload)
    peer = short("mlp", att.network, att.workload)  # renamed once inside
    bridge = bridge_name(att.network)
    with IPRoute() as ip:
        if not ip.link_lookup(ifname=host_end):
            fd = os.open(netns.path_of(att.namespace), os.O_RDONLY)
            try:
                ip.link("add", ifname=host_end, kind="veth",
                        peer={"ifname": peer, "net_ns_fd": fd})
            finally:
                os.close(fd)
        index = one_link(ip, host_end, f"cannot attach veth {host_end!r}: it vanished")
        if att.mtu is not None:
            ip.link("set", index=index, mtu=att.mtu)
        master = one_link(ip, bridge, f"cannot attach veth {host_end!r} to bridge "
                                      f"{bridge!r}: no such bridge")
        ip.link("set", index=index, master=master, state="up")
    with netns.inside(att.namespace), IPRoute() as ns:
        found = ns.link_lookup(ifname=peer) or ns.link_lookup(ifname=att.ifname)
        if not found:  # the pair existed already, with its other end elsewhere
            raise NetworkError(f"cannot attach veth {host_end!r}: its peer is not in "
                               f"namespace {att.namespace}")
        index = found[0]
        ns.link("set", index=index, state="down")
        ns.link("set", index=index, ifname=att.ifname)
        if att.mac is not None:
            ns.link("set", index=index, address=att.mac)
        if att.mtu is not None:
            ns.link("set", index=index, mtu=att.mtu)
        have = {a.get_attr("IFA_ADDRESS") for a in ns.get_addr(index=index)}
        if att.address not in have:
            ns.addr("add", index=index, address=att.address, prefixlen=att.prefix)
        ns.link("set", index=index, state="up")
        if att.gateway is not None:
            try:
                ns.route("add", dst="default", gateway=att.gateway)
            except NetlinkError as exc:
                if exc.code != 17:  # EEXIST: another network already gives the route
                    raise


def detach(network: str, workload: str) -> None:
    """Remove the workload's veth pair on ``network`` (its end inside goes with it)."""
    delete_link(veth_name(network, workload))

"""The overlay driver's links: a VXLAN device on the network's bridge, whose
forwarding (FDB: MAC -> remote host) and neighbour (IP -> MAC) entries are set from
the catalog rather than learned. The device answers ARP for remote workloads itself
(``proxy``) and floods nothing between hosts, so the same gateway address can sit on
every host's bridge and no broadcast crosses the underlay — the shape of Docker's
overlay driver, programmed through netlink.
"""

from __future__ import annotations

from pyroute2 import IPRoute
from pyroute2.netlink.exceptions import NetlinkError
from pyroute2.netlink.rtnl import ndmsg

from meshlet.errors import MeshletError
from meshlet.net.bridge import VXLAN_PREFIX, bridge_name, short
from meshlet.net.overlay_plan import Remote

PORT = 4789        # IANA's VXLAN port
OVERHEAD = 50      # outer Ethernet + IP + UDP + VXLAN headers
PERMANENT = ndmsg.states["permanent"]


def vxlan_name(network: str) -> str:
    return short(VXLAN_PREFIX, network)


def ensure_vxlan(network: str, vni: int, local: str, mtu: int) -> str:
    """The network's VXLAN device on its bridge (idempotent); returns its name. The
    bridge's MTU follows the device's, which leaves room for the tunnel headers."""
    name = vxlan_name(network)
    with IPRoute() as ip:
        if not ip.link_lookup(ifname=name):
            ip.link("add", ifname=name, kind="vxlan", vxlan_id=vni, vxlan_local=local,
                    vxlan_port=PORT, vxlan_learning=0, vxlan_proxy=1, mtu=mtu)
        index = ip.link_lookup(ifname=name)[0]
        master = ip.link_lookup(ifname=bridge_name(network))[0]
        ip.link("set", index=index, master=master, state="up")
    return name


def mtu_for(local: str) -> int:
    """The MTU of an overlay's links: that of the underlay interface holding ``local``,
    less the tunnel headers (a bridge drops, not fragments, a frame too big)."""
    with IPRoute() as ip:
        held = ip.get_addr(address=local)
        if not held:
            raise MeshletError(f"no interface here has the address {local} (the "
                               "agent's --advertise address)")
        link = ip.link("get", index=held[0]["index"])[0]
        return int(link.get_attr("IFLA_MTU")) - OVERHEAD


def program(network: str, wanted: set[Remote]) -> None:
    """Make the device's entries exactly ``wanted``: add what is missing, remove what
    is stale (a workload removed, a host that left)."""
    name = vxlan_name(network)
    with IPRoute() as ip:
        found = ip.link_lookup(ifname=name)
        if not found:
            return
        index = found[0]
        fdb = {(e.get_attr("NDA_LLADDR"), e.get_attr("NDA_DST"))
               for e in ip.fdb("dump", ifindex=index) if e.get_attr("NDA_DST")}
        neigh = {(e.get_attr("NDA_DST"), e.get_attr("NDA_LLADDR"))
                 for e in ip.neigh("dump", ifindex=index)
                 if e.get_attr("NDA_LLADDR") and e["state"] & PERMANENT}
        want_fdb = {(r.mac, r.vtep) for r in wanted}
        want_neigh = {(r.address, r.mac) for r in wanted}
        for mac, dst in fdb - want_fdb:
            _quietly(ip.fdb, "del", ifindex=index, lladdr=mac, dst=dst)
        for address, mac in neigh - want_neigh:
            _quietly(ip.neigh, "del", ifindex=index, dst=address, lladdr=mac)
        for mac, dst in want_fdb - fdb:
            ip.fdb("append", ifindex=index, lladdr=mac, dst=dst)
        for address, mac in want_neigh - neigh:
            ip.neigh("replace", ifindex=index, dst=address, lladdr=mac, state=PERMANENT)


def _quietly(call: object, *args: object, **kwargs: object) -> None:
    try:
        call(*args, **kwargs)  # type: ignore[operator]
    except NetlinkError as exc:
        if exc.code not in (2, 19):  # ENOENT, ENODEV: already gone
            raise

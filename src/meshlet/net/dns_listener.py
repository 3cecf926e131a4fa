"""The embedded DNS server's sockets: one UDP socket per container, bound to
127.0.0.11:53 inside the container's own namespace (as Docker's embedded DNS is
reached), served by the agent's event loop. Binding inside the namespace needs no
iptables and works on internal networks, which have no gateway to listen on."""

from __future__ import annotations

import asyncio
import socket
from pathlib import Path
from typing import cast

from meshlet.net import netns
from meshlet.net.dns import Lookup, answer

ADDRESS = "127.0.0.11"
RESOLV_CONF = f"nameserver {ADDRESS}\noptions ndots:0\n"


class DnsProtocol(asyncio.DatagramProtocol):
    def __init__(self, lookup: Lookup) -> None:
        self.lookup = lookup
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        response = answer(data, self.lookup)
        if response is not None and self.transport is not None:
            self.transport.sendto(response, addr)


def bind_inside(namespace: str) -> socket.socket:
    """A UDP socket on 127.0.0.11:53 in ``namespace`` (call from a worker thread)."""
    with netns.inside(namespace):
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            sock.bind((ADDRESS, 53))
        except OSError:
            sock.close()
            raise
    sock.setblocking(False)
    return sock


def write_resolv_conf(namespace: str) -> None:
    """Point the namespace's resolver at the embedded DNS (`ip netns exec` mounts
    /etc/netns/NAME/resolv.conf over /etc/resolv.conf for what it runs)."""
    path = Path(netns.RESOLV_DIR) / namespace / "resolv.conf"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(RESOLV_CONF)


async def serve(namespace: str, lookup: Lookup) -> asyncio.DatagramTransport:
    sock = await asyncio.to_thread(bind_inside, namespace)
    transport, _ = await asyncio.get_running_loop().create_datagram_endpoint(
        lambda: DnsProtocol(lookup), sock=sock)
    return transport

"""The embedded DNS server's sockets: a UDP and a TCP socket per container, bound to
127.0.0.11:53 inside the container's own namespace (as Docker's embedded DNS is
reached), served by the agent's event loop. Binding inside the namespace needs no
iptables and works on internal networks, which have no gateway to listen on. TCP
carries the answers too big for a UDP datagram (the resolver retries there on TC).

``serve`` closes what it opened when it fails or is cancelled at any of its awaits
(a workload stopping while its sandbox opens): the sockets bound in a worker thread,
which cannot be stopped, are closed when it ends; the UDP transport and the TCP server,
made before the TCP server starts serving, are closed with them."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct
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


async def serve_tcp_client(reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                           lookup: Lookup) -> None:
    """Length-prefixed queries on one connection, until the client closes it."""
    try:
        while True:
            size = struct.unpack("!H", await reader.readexactly(2))[0]
            response = answer(await reader.readexactly(size), lookup, tcp=True)
            if response is None:
                break
            writer.write(struct.pack("!H", len(response)) + response)
            await writer.drain()
    except (asyncio.IncompleteReadError, ConnectionError):
        pass
    finally:
        writer.close()
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()


class DnsEndpoint:
    """One namespace's DNS sockets."""

    def __init__(self, udp: asyncio.DatagramTransport, tcp: asyncio.Server) -> None:
        self.udp = udp
        self.tcp = tcp

    def close(self) -> None:
        self.udp.close()
        self.tcp.close()


def bind_inside(namespace: str, kind: socket.SocketKind) -> socket.socket:
    """A socket on 127.0.0.11:53 in ``namespace`` (call from a worker thread)."""
    with netns.inside(namespace):
        sock = socket.socket(socket.AF_INET, kind)
        try:
            if kind == socket.SOCK_STREAM:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind((ADDRESS, 53))
        except OSError:
            sock.close()
            raise
    sock.setblocking(False)
    return sock


def bind_both(namespace: str) -> tuple[socket.socket, socket.socket]:
    """The UDP and the TCP socket, in one trip into the namespace (a worker thread)."""
    udp = bind_inside(namespace, socket.SOCK_DGRAM)
    try:
        return udp, bind_inside(namespace, socket.SOCK_STREAM)
    except BaseException:
        udp.close()
        raise


def close_bound(binding: asyncio.Future[tuple[socket.socket, socket.socket]]) -> None:
    """Close the sockets of a ``bind_both`` whose await was cancelled, once it ends."""
    if not binding.cancelled() and binding.exception() is None:
        for sock in binding.result():
            sock.close()


def write_resolv_conf(namespace: str) -> None:
    """Point the namespace's resolver at the embedded DNS (`ip netns exec` mounts
    /etc/netns/NAME/resolv.conf over /etc/resolv.conf for what it runs)."""
    path = Path(netns.RESOLV_DIR) / namespace / "resolv.conf"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(RESOLV_CONF)


async def serve(namespace: str, lookup: Lookup) -> DnsEndpoint:
    """``namespace``'s DNS sockets, serving; nothing of them is left open if this fails
    or is cancelled. Raises OSError, MeshletError."""
    loop = asyncio.get_running_loop()
    binding = loop.run_in_executor(None, bind_both, namespace)
    try:
        udp_sock, tcp_sock = await asyncio.shield(binding)
    except asyncio.CancelledError:
        binding.add_done_callback(close_bound)
        raise
    transport: asyncio.DatagramTransport | None = None
    server: asyncio.Server | None = None
    try:
        # The UDP socket is the loop's now: a transport whose await fails, it closes.
        transport, _ = await loop.create_datagram_endpoint(
            lambda: DnsProtocol(lookup), sock=udp_sock)
        # Made, then started: start_server would start serving before an await of its
        # own, and a cancellation there would leave it serving, unseen.
        server = await asyncio.start_server(
            lambda r, w: serve_tcp_client(r, w, lookup), sock=tcp_sock, start_serving=False)
        await server.start_serving()
    except BaseException:
        if server is not None:
            server.close()  # and its socket
        else:
            tcp_sock.close()
        if transport is not None:
            transport.close()
        raise
    return DnsEndpoint(transport, server)

"""One connection from another server, as an asyncio Protocol: the TLS handshake (if
any), then length-prefixed frames, each decoded and handed on.

TLS runs here over memory BIOs (``ssl.SSLObject``) rather than through the loop's
``start_tls`` or a listener's ``ssl=``: uvloop's server-side ``start_tls`` never
completes a handshake, and a listener's own TLS hides every failed handshake, which
must be counted. Every refusal goes through ``refuse(reason, what)``:
``bad_certificate`` (no valid certificate of the cluster, or no handshake within
``HANDSHAKE_TIMEOUT``), ``wrong_sender`` (a frame that claims another server than the
certificate names), ``malformed`` (a frame too large or that does not decode, or
broken TLS records); a refused connection is closed, a refused frame only dropped.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, cast

from meshlet.errors import ConfigError
from meshlet.raft.codec import FRAME, MAX_FRAME, decode
from meshlet.raft.core import Message, NodeId

if TYPE_CHECKING:
    from meshlet.raft.transport import TransportTls

log = logging.getLogger(__name__)
HANDSHAKE_TIMEOUT = 5.0
READ_SIZE = 256 * 1024


class Inbound(asyncio.Protocol):
    def __init__(self, tls: TransportTls | None, deliver: Callable[[Message], None],
                 refuse: Callable[[str, str], None],
                 connections: set[Inbound]) -> None:
        self.tls = tls
        self.deliver = deliver
        self.refuse = refuse
        self.connections = connections
        self.transport: asyncio.Transport | None = None
        self.sender: NodeId | None = None  # whom the peer's certificate names
        self.ready = tls is None           # frames are read once the handshake is done
        self.buffer = bytearray()          # plaintext not yet framed
        self.incoming = ssl.MemoryBIO()
        self.outgoing = ssl.MemoryBIO()
        self.tls_object: ssl.SSLObject | None = None
        self.timer: asyncio.TimerHandle | None = None
        self.closed = False
        self.peer = "an unknown address"

    def __repr__(self) -> str:
        return f"<Inbound from {self.peer} sender={self.sender} ready={self.ready}>"

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's: no subclass
        self.connections.add(self)
        peer = transport.get_extra_info("peername")
        if isinstance(peer, tuple):
            self.peer = f"{peer[0]}:{peer[1]}"
        if self.tls is not None:
            self.tls_object = self.tls.server.wrap_bio(self.incoming, self.outgoing,
                                                       server_side=True)
            self.timer = asyncio.get_running_loop().call_later(
                HANDSHAKE_TIMEOUT, self.handshake_late)

    def handshake_late(self) -> None:
        if not self.ready and not self.closed:
            self.refuse("bad_certificate", f"a connection from {self.peer} that made no "
                        f"TLS handshake within {HANDSHAKE_TIMEOUT:g}s")
            self.close()

    def data_received(self, data: bytes) -> None:
        if self.closed:
            return
        tls = self.tls_object
        if tls is None:
            self.buffer += data
        else:
            self.incoming.write(data)
            if not self.ready and not self.handshake(tls):
                return
            self.decrypt(tls)
        if not self.closed:
            self.frames()

    def handshake(self, tls: ssl.SSLObject) -> bool:
        """Go on with the handshake; True once it is done and the peer is a server of
        this cluster."""
        assert self.tls is not None
        try:
            tls.do_handshake()
        except ssl.SSLWantReadError:
            self.flush()
            return False
        except ssl.SSLError as exc:
            self.flush()  # the alert, so the peer knows why
            self.refuse("bad_certificate", f"a connection from {self.peer} without a "
                        f"valid certificate of this cluster ({exc.reason or exc})")
            self.close()
            return False
        self.flush()
        if self.timer is not None:
            self.timer.cancel()
        self.sender = self.tls.peer_id(tls.getpeercert())
        if not self.sender:
            self.refuse("bad_certificate", f"a connection from {self.peer} whose "
                        "certificate names no server of this cluster")
            self.close()
            return False
        self.ready = True
        return True

    def decrypt(self, tls: ssl.SSLObject) -> None:
        while True:
            try:
                chunk = tls.read(READ_SIZE)
            except ssl.SSLWantReadError:
                break
            except ssl.SSLError as exc:
                self.refuse("malformed", f"a connection from {self.peer}: {exc}")
                self.close()
                break
            if not chunk:  # the peer's close_notify: answer it, then hang up
                try:
                    tls.unwrap()
                except ssl.SSLError:
                    pass
                self.frames()
                self.flush()
                self.close()
                break
            self.buffer += chunk
        self.flush()

    def flush(self) -> None:
        data = self.outgoing.read()
        if data and self.transport is not None and not self.closed:
            self.transport.write(data)

    def frames(self) -> None:
        buffer = self.buffer
        at = 0
        try:
            while len(buffer) - at >= FRAME.size:
                (length,) = FRAME.unpack_from(buffer, at)
                if length > MAX_FRAME:
                    raise ConfigError(f"raft frame of {length} bytes is too large")
                end = at + FRAME.size + length
                if len(buffer) < end:
                    break
                m = decode(bytes(buffer[at + FRAME.size:end]))
                at = end
                if self.sender is not None and m.frm != self.sender:
                    self.refuse("wrong_sender", f"a frame from {m.frm[:64]!r} on the "
                                f"connection of server {self.sender!r}")
                    continue
                self.deliver(m)
        except ConfigError as exc:
            self.refuse("malformed", f"a connection from {self.peer}: {exc}")
            self.close()
        finally:
            del buffer[:at]

    def eof_received(self) -> Any:
        return None  # the transport closes itself

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.connections.discard(self)
        self.buffer.clear()
        if self.timer is not None:
            self.timer.cancel()

    def close(self) -> None:
        self.closed = True
        self.connections.discard(self)
        if self.timer is not None:
            self.timer.cancel()
        if self.transport is not None:
            self.transport.close()

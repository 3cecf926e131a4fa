"""Mutual TLS between sidecars: the contexts a sidecar's listeners and connectors use,
made from the workload's certificate, key and trust bundle, and swapped whole when the
agent renews them.

Inbound listeners accept TLS 1.3 only, from callers whose certificate chains to the
trust bundle (an expired one, one from another CA, or none is refused in the
handshake). Outbound connections present the workload's certificate and accept a
destination only if its certificate names the SPIFFE ID of the service meant; host
names play no part. ALPN offers ``http/1.1`` (room for ``h2``).

Renewal never drops a connection: a listener is bound once with a base context whose
SNI callback hands each new handshake the current context, and connections carry the
context they started with. The base context's own certificate is the first one; it is
never used once the callback has run.
"""

from __future__ import annotations

import ssl
from typing import Any

from meshlet.errors import ConfigError
from meshlet.proxy.config import TlsConfig

ALPN = ["http/1.1"]


def _context(purpose: int, tls: TlsConfig) -> ssl.SSLContext:
    context = ssl.SSLContext(purpose)
    context.minimum_version = ssl.TLSVersion.TLSv1_3
    context.verify_mode = ssl.CERT_REQUIRED
    context.check_hostname = False  # the SPIFFE ID is checked instead
    try:
        context.load_cert_chain(tls.cert, tls.key)
        context.load_verify_locations(tls.roots)
    except (OSError, ValueError, ssl.SSLError) as exc:
        raise ConfigError(f"tls: cannot load the workload's certificate, key or roots "
                          f"({tls.cert}, {tls.key}, {tls.roots}): {exc}", "tls") from None
    context.set_alpn_protocols(ALPN)
    return context


def peer_identity(transport: Any) -> str | None:
    """The SPIFFE ID (URI SAN) of the verified peer on ``transport``, or None."""
    cert = transport.get_extra_info("peercert") if transport is not None else None
    for kind, value in (cert or {}).get("subjectAltName", ()):
        if kind == "URI" and value.startswith("spiffe://"):
            return str(value)
    return None


def caller_service(transport: Any, tls: TlsConfig) -> str:
    """The service a verified caller's certificate names in this trust domain and
    namespace, or "" (none, or another's): only a ``*`` source names such a caller."""
    uri = peer_identity(transport)
    prefix = f"spiffe://{tls.trust_domain}/ns/{tls.namespace}/svc/"
    if uri is None or not uri.startswith(prefix):
        return ""
    service = uri[len(prefix):]
    return service if service and "/" not in service else ""


class MeshTls:
    """The current server and client contexts of one sidecar."""

    def __init__(self, tls: TlsConfig) -> None:
        self.config = tls
        self.server, self.client = self.prepare(tls)
        base = _context(ssl.PROTOCOL_TLS_SERVER, tls)
        base.sni_callback = self._pick
        self.listening = base  # what listeners are bound with, once

    def __repr__(self) -> str:
        return f"<MeshTls {self.config.identity('*')} serial={self.config.serial or '-'}>"

    @staticmethod
    def prepare(tls: TlsConfig) -> tuple[ssl.SSLContext, ssl.SSLContext]:
        """Both contexts for ``tls``; raises ConfigError, changing nothing."""
        return _context(ssl.PROTOCOL_TLS_SERVER, tls), _context(ssl.PROTOCOL_TLS_CLIENT, tls)

    def install(self, tls: TlsConfig,
                contexts: tuple[ssl.SSLContext, ssl.SSLContext]) -> None:
        """Use ``contexts`` (from ``prepare(tls)``) for every handshake from now on."""
        self.config = tls
        self.server, self.client = contexts

    def _pick(self, ssl_object: Any, server_name: str | None, _: Any) -> None:
        ssl_object.context = self.server

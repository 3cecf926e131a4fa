"""Mutual TLS between sidecars: the contexts a sidecar's listeners and connectors use,
made from the workload's certificate, key and trust bundle, and swapped whole when the
agent renews them.

Inbound listeners accept TLS 1.3 only, from callers whose certificate chains to the
trust bundle (an expired one, one from another CA, or none is refused in the
handshake). Outbound connections present the workload's certificate and accept a
destination only if its certificate names the SPIFFE ID of the service meant; host
names play no part. Listeners offer ALPN ``h2`` and ``http/1.1``; a connector offers
``http/1.1``, or only ``h2`` for a destination spoken to in HTTP/2 (``h2_upstream.py``).

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

SERVER_ALPN = ["h2", "http/1.1"]
HTTP1_ALPN = ["http/1.1"]
H2_ALPN = ["h2"]


def _context(purpose: int, tls: TlsConfig, alpn: list[str]) -> ssl.SSLContext:
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
    context.set_alpn_protocols(alpn)
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


Contexts = tuple[ssl.SSLContext, ssl.SSLContext, ssl.SSLContext]


class MeshTls:
    """The current server and client contexts of one sidecar (``client_h2`` for
    destinations spoken to in HTTP/2)."""

    def __init__(self, tls: TlsConfig) -> None:
        self.config = tls
        self.server, self.client, self.client_h2 = self.prepare(tls)
        base = _context(ssl.PROTOCOL_TLS_SERVER, tls, SERVER_ALPN)
        base.sni_callback = self._pick
        self.listening = base  # what listeners are bound with, once

    def __repr__(self) -> str:
        return f"<MeshTls {self.config.identity('*')} serial={self.config.serial or '-'}>"

    @staticmethod
    def prepare(tls: TlsConfig) -> Contexts:
        """The contexts for ``tls``; raises ConfigError, changing nothing."""
        return (_context(ssl.PROTOCOL_TLS_SERVER, tls, SERVER_ALPN),
                _context(ssl.PROTOCOL_TLS_CLIENT, tls, HTTP1_ALPN),
                _context(ssl.PROTOCOL_TLS_CLIENT, tls, H2_ALPN))

    def install(self, tls: TlsConfig, contexts: Contexts) -> None:
        """Use ``contexts`` (from ``prepare(tls)``) for every handshake from now on."""
        self.config = tls
        self.server, self.client, self.client_h2 = contexts

    def _pick(self, ssl_object: Any, server_name: str | None, _: Any) -> None:
        ssl_object.context = self.server

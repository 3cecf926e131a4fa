"""A server's TLS credentials in its data directory, kept current: ``tls/server.key``
(its own key, 0600, made once), ``tls/server.pem`` (its certificate from the cluster's
CA, issued again when it nears its end, when the CA or the addresses it names change)
and ``ca.pem`` (the cluster's trust bundle: every root it trusts, which the CLI and
other clients verify against). The certificate comes from the active root generation,
and is issued again when that changes (``server/tls.py`` follows the state).
"""

from __future__ import annotations

import datetime
import os
import ssl
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from meshlet.errors import ConfigError
from meshlet.private_files import private_dir, write_private
from meshlet.security import ca

TLS_DIR = "tls"
CA_FILE = "ca.pem"


@dataclass(frozen=True)
class ServerCredentials:
    """Where a server's key, certificate and the cluster root are, and for whom."""

    server_id: str
    cluster: str
    key_file: Path
    cert_file: Path
    ca_file: Path

    def __repr__(self) -> str:
        return f"<ServerCredentials {self.server_id} of {self.cluster}>"

    @property
    def server_name(self) -> str:
        """The name every server's certificate holds, checked as TLS's hostname."""
        return ca.server_dns_name(self.cluster)

    def server_context(self) -> ssl.SSLContext:
        """For a listener that requires a cluster certificate of whoever connects
        (mutual TLS, TLS 1.3)."""
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self._configure(context)
        context.verify_mode = ssl.CERT_REQUIRED
        return context

    def api_context(self) -> ssl.SSLContext:
        """For the HTTPS API: a client certificate is not asked for (clients prove
        themselves with tokens)."""
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self._configure(context)
        context.verify_mode = ssl.CERT_NONE
        return context

    def client_context(self) -> ssl.SSLContext:
        """For connecting to another server: its certificate must come from the
        cluster's root and name the cluster's servers; this one shows its own."""
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        self._configure(context)
        return context

    def _configure(self, context: ssl.SSLContext) -> None:
        context.minimum_version = ssl.TLSVersion.TLSv1_3
        context.load_cert_chain(self.cert_file, self.key_file)
        context.load_verify_locations(cafile=str(self.ca_file))


def peer_server_id(peercert: object, cluster: str) -> str | None:
    """The server id in a peer's certificate as ``ssl`` decodes it (its URI name)."""
    if not isinstance(peercert, dict):
        return None
    prefix = ca.server_uri(cluster, "")
    for kind, value in peercert.get("subjectAltName", ()):
        if kind == "URI" and isinstance(value, str) and value.startswith(prefix):
            return value[len(prefix):] or None
    return None


def load_key(path: Path) -> ec.EllipticCurvePrivateKey:
    """This server's key, made (and written 0600) the first time."""
    try:
        key = serialization.load_pem_private_key(path.read_bytes(), None)
    except FileNotFoundError:
        key = ca.new_key()
        write_private(path, key.private_bytes(serialization.Encoding.PEM,
                                              serialization.PrivateFormat.PKCS8,
                                              serialization.NoEncryption()))
        return key
    except ValueError as exc:
        raise ConfigError(f"{path}: not a private key this server can read: {exc}",
                          "tls") from None
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise ConfigError(f"{path}: not an EC private key", "tls")
    os.chmod(path, 0o600)
    return key


def ensure_server_credentials(data_dir: Path, join_token: str, server_id: str,
                              ips: list[str], now: datetime.datetime | None = None,
                              generation: int = 0, trusted: Sequence[int] = (0,),
                              roots: ca.Roots | None = None) -> ServerCredentials:
    """Make sure ``data_dir`` holds this server's key, a current certificate from root
    ``generation`` naming ``server_id`` and ``ips`` (followed by the cross-signed
    certificates down to generation 0, so a peer that trusts only an older root
    verifies it), and the trust bundle (every ``trusted`` root) as
    ``ca.pem``; returns where they are. Raises ConfigError (a key that cannot be read),
    StorageError, OSError."""
    now = now or datetime.datetime.now(datetime.UTC)
    roots = roots or ca.Roots(join_token)
    root = roots.get(generation)
    tls = private_dir(data_dir / TLS_DIR)
    creds = ServerCredentials(server_id, root.cluster, tls / "server.key",
                              tls / "server.pem", data_dir / CA_FILE)
    key = load_key(creds.key_file)
    tail = b"".join(c.public_bytes(serialization.Encoding.PEM)
                    for c in roots.presented(generation))
    leaf = current(creds.cert_file, root, key, server_id, ips, now)
    if leaf is None:
        leaf = ca.issue_server(root, key.public_key(), server_id, ips, now
                               ).public_bytes(serialization.Encoding.PEM)
    if not creds.cert_file.exists() or creds.cert_file.read_bytes() != leaf + tail:
        write_private(creds.cert_file, leaf + tail)
    bundle = b"".join(roots.get(g).pem for g in sorted(set(trusted) | {generation}))
    if not creds.ca_file.exists() or creds.ca_file.read_bytes() != bundle:
        write_private(creds.ca_file, bundle)
    return creds


def current(path: Path, root: ca.Root, key: ec.EllipticCurvePrivateKey, server_id: str,
            ips: list[str], now: datetime.datetime) -> bytes | None:
    """The certificate at ``path`` (its first, PEM) if it may go on being used."""
    try:
        cert = x509.load_pem_x509_certificates(path.read_bytes())[0]
        if ca.verify_server(cert, root, now) != server_id or ca.needs_renewal(cert, now):
            return None
    except (FileNotFoundError, ValueError, ConfigError):
        return None
    if cert.public_key() != key.public_key():
        return None
    sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    named = {str(ip) for ip in sans.get_values_for_type(x509.IPAddress)}
    named.update(sans.get_values_for_type(x509.DNSName))
    if not {ip for ip in ips if ip not in ("0.0.0.0", "::")} <= named:
        return None
    return cert.public_bytes(serialization.Encoding.PEM)

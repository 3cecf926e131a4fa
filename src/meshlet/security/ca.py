"""The cluster's certificate authority, pure: keys and certificates in, certificates
and verdicts out; the clock is an argument, and nothing here touches a file or socket.

The root's key is derived from the cluster's join token (HKDF-SHA256), and its
certificate is signed deterministically (RFC 6979) over fixed fields, so every server
given the same token makes the same root, byte for byte, before any Raft message has
been exchanged. That is what lets founders that start together speak mutual TLS from
their first frame, and lets a server that joins verify the cluster it is joining. The
cost: whoever holds the join token can issue server certificates, which is no more than
the token already grants (it is what admits a server to the cluster).

A root has a *generation*. Generation 0 is the founding root (its derivation is
unchanged from before there were generations, so an existing cluster keeps its root);
``meshlet ca rotate`` makes generation N+1 the active one, whose key is derived the
same way with N+1 in HKDF's info, so every server derives it on its own once the
rotation is committed. Every generation's certificate has the same subject and differs
in key (and so in key identifier); generation N+1 is also *cross-signed* by generation
N (same subject and key, issued by N), deterministically too. A certificate issued by
N+1, sent with the cross-signed certificates down to an older generation, verifies
against that older root alone: OpenSSL counts no self-issued certificate (subject ==
issuer) against a root's ``path_length=0``, so the chain is accepted by a server or
client that has not yet heard of the rotation.

A server certificate names the cluster's servers (DNS ``server.<cluster>.meshlet``, as
Consul's ``server.<dc>.consul``), the one server (URI
``spiffe://<cluster>.meshlet/server/<id>``) and the IP addresses it serves on. Its key
is the server's own and never leaves it.
"""

from __future__ import annotations

import datetime
import hashlib
import ipaddress
from dataclasses import dataclass

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from meshlet.errors import ConfigError

CURVE = ec.SECP256R1()
ROOT_NOT_BEFORE = datetime.datetime(2020, 1, 1, tzinfo=datetime.UTC)
ROOT_NOT_AFTER = datetime.datetime(9999, 12, 31, 23, 59, 59, tzinfo=datetime.UTC)  # RFC 5280
SERVER_LIFETIME = datetime.timedelta(days=90)
BACKDATE = datetime.timedelta(minutes=5)  # tolerate clocks a little behind the issuer's
SALT = b"meshlet cluster ca v1"
MAX_GENERATION = 1 << 20
CHAIN_LINKS = 6  # cross-signed certificates sent after a leaf, at most


@dataclass(frozen=True)
class Root:
    """The cluster's root: its key (derived, never stored) and certificate."""

    cluster: str
    key: ec.EllipticCurvePrivateKey
    cert: x509.Certificate
    generation: int = 0

    def __repr__(self) -> str:
        return (f"<Root {self.cluster} generation {self.generation} "
                f"{self.cert.subject.rfc4514_string()}>")

    @property
    def pem(self) -> bytes:
        return self.cert.public_bytes(serialization.Encoding.PEM)


def _hkdf(secret: str, info: bytes, length: int) -> bytes:
    return HKDF(hashes.SHA256(), length, SALT, info).derive(secret.encode())


def cluster_name(join_token: str) -> str:
    """A short name for the cluster the token founds: the DNS label of its servers'
    names (not secret: it reveals nothing of the token)."""
    return "c" + _hkdf(join_token, b"cluster name", 6).hex()


def server_dns_name(cluster: str) -> str:
    return f"server.{cluster}.meshlet"


def server_uri(cluster: str, server_id: str) -> str:
    return f"spiffe://{cluster}.meshlet/server/{server_id}"


def derive_root(join_token: str, generation: int = 0) -> Root:
    """The cluster's root of ``generation``, the same on every server given
    ``join_token``. Raises ConfigError without a token or for a negative generation."""
    if not join_token:
        raise ConfigError("a join token is needed to make the cluster's CA", "join_token")
    if not 0 <= generation <= MAX_GENERATION:
        raise ConfigError(f"generation: {generation} is not a root generation", "generation")
    cluster = cluster_name(join_token)
    # Generation 0's info is what it was before generations existed: the same root.
    info = b"root key" if generation == 0 else b"root key generation %d" % generation
    order = 0xFFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551  # P-256's n
    scalar = int.from_bytes(_hkdf(join_token, info, 48)) % (order - 1) + 1
    key = ec.derive_private_key(scalar, CURVE)
    name = root_name(cluster)
    cert = _ca_certificate(name, key.public_key(), key, b"")
    return Root(cluster, key, cert, generation)


def root_name(cluster: str) -> x509.Name:
    """The subject of every generation's root (and of its cross-signed certificate)."""
    return x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "meshlet"),
                      x509.NameAttribute(NameOID.COMMON_NAME, f"meshlet CA {cluster}")])


def _ca_certificate(name: x509.Name, public: ec.EllipticCurvePublicKey,
                    signer: ec.EllipticCurvePrivateKey, salt: bytes) -> x509.Certificate:
    """A CA certificate for ``public`` over fixed fields, signed deterministically by
    ``signer`` (``public``'s own key: a root; an older root's: a cross-signed one;
    ``salt`` keeps their serials apart)."""
    spki = public.public_bytes(serialization.Encoding.DER,
                               serialization.PublicFormat.SubjectPublicKeyInfo)
    serial = int.from_bytes(hashlib.sha256(salt + spki).digest()[:16]) >> 1
    builder = (x509.CertificateBuilder()
               .subject_name(name).issuer_name(name).public_key(public)
               .serial_number(serial)
               .not_valid_before(ROOT_NOT_BEFORE).not_valid_after(ROOT_NOT_AFTER)
               .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
               .add_extension(x509.KeyUsage(digital_signature=False, content_commitment=False,
                                            key_encipherment=False, data_encipherment=False,
                                            key_agreement=False, key_cert_sign=True,
                                            crl_sign=True, encipher_only=False,
                                            decipher_only=False), critical=True)
               .add_extension(x509.SubjectKeyIdentifier.from_public_key(public),
                              critical=False))
    if salt:  # cross-signed: say whose key signed it
        builder = builder.add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(
            signer.public_key()), critical=False)
    return builder.sign(signer, hashes.SHA256(), ecdsa_deterministic=True)


def cross_sign(new: Root, old: Root) -> x509.Certificate:
    """``new``'s root certificate as issued by ``old``: the same subject and key, so a
    certificate ``new`` issued verifies through it against ``old`` alone."""
    if new.cluster != old.cluster:
        raise ConfigError("cannot cross-sign a root of another cluster", "root")
    return _ca_certificate(new.cert.subject, new.key.public_key(), old.key,
                           b"cross-signed by %d" % old.generation)


def chain_to(join_token: str, generation: int, oldest: int) -> list[x509.Certificate]:
    """The cross-signed certificates that lead from ``generation`` down to ``oldest``:
    ``generation`` by ``generation - 1``, ..., ``oldest + 1`` by ``oldest`` (none when
    they are the same). Sent after a leaf, they let one who trusts only ``oldest``
    verify it."""
    return Roots(join_token).chain(generation, oldest)


def new_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(CURVE)


def issue_server(root: Root, public: ec.EllipticCurvePublicKey, server_id: str,
                 ips: list[str], now: datetime.datetime,
                 lifetime: datetime.timedelta = SERVER_LIFETIME) -> x509.Certificate:
    """A certificate for server ``server_id`` (its key's public half ``public``),
    valid from a little before ``now`` for ``lifetime``; also names ``ips`` (the
    addresses it serves on; a host name among them is named as one)."""
    names: list[x509.GeneralName] = [
        x509.DNSName(server_dns_name(root.cluster)),
        x509.UniformResourceIdentifier(server_uri(root.cluster, server_id))]
    for host in sorted(set(ips)):
        try:
            address = ipaddress.ip_address(host)
        except ValueError:  # a host name
            names.append(x509.DNSName(host))
            continue
        if not address.is_unspecified:
            names.append(x509.IPAddress(address))
    return (x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, server_id)]))
            .issuer_name(root.cert.subject).public_key(public)
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - BACKDATE).not_valid_after(now + lifetime)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=True, content_commitment=False,
                                         key_encipherment=False, data_encipherment=False,
                                         key_agreement=True, key_cert_sign=False,
                                         crl_sign=False, encipher_only=False,
                                         decipher_only=False), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH,
                                                  ExtendedKeyUsageOID.CLIENT_AUTH]),
                           critical=False)
            .add_extension(x509.SubjectAlternativeName(names), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(
                root.key.public_key()), critical=False)
            .sign(root.key, hashes.SHA256()))


def signed_by(cert: x509.Certificate, issuer: x509.Certificate) -> bool:
    """Whether ``issuer`` issued ``cert``: its subject is ``cert``'s issuer, and its key
    verifies ``cert``'s signature."""
    if cert.issuer != issuer.subject:
        return False
    try:
        cert.verify_directly_issued_by(issuer)
    except (InvalidSignature, ValueError, TypeError):
        return False
    return True


def server_id_of(cert: x509.Certificate, cluster: str) -> str | None:
    """The server a certificate names for ``cluster``, or None."""
    try:
        sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return None
    prefix = server_uri(cluster, "")
    for uri in sans.get_values_for_type(x509.UniformResourceIdentifier):
        if uri.startswith(prefix) and len(uri) > len(prefix):
            return uri[len(prefix):]
    return None


def verify_server(cert: x509.Certificate, root: Root, now: datetime.datetime) -> str:
    """The id of the server ``cert`` was issued to by ``root``, valid at ``now``.
    Raises ConfigError saying what is wrong with it."""
    if cert.issuer != root.cert.subject:
        raise ConfigError("the certificate was not issued by this cluster's CA", "cert")
    try:
        cert.verify_directly_issued_by(root.cert)
    except (InvalidSignature, ValueError, TypeError):
        raise ConfigError("the certificate's signature is not this cluster's CA's",
                          "cert") from None
    if not cert.not_valid_before_utc <= now <= cert.not_valid_after_utc:
        raise ConfigError(f"the certificate is valid only from {cert.not_valid_before_utc} "
                          f"to {cert.not_valid_after_utc}", "cert")
    server_id = server_id_of(cert, root.cluster)
    if server_id is None:
        raise ConfigError("the certificate names no server of this cluster", "cert")
    return server_id


SERVER_RENEWAL = 2 / 3  # servers renew once two thirds of their certificate's life passed


def needs_renewal(cert: x509.Certificate, now: datetime.datetime,
                  at: float = SERVER_RENEWAL) -> bool:
    """Whether ``cert`` is due: ``at`` (a fraction) of its life has passed, or it is
    not valid yet (the clock went back)."""
    start, end = cert.not_valid_before_utc, cert.not_valid_after_utc
    return now >= start + (end - start) * at or now < start


class Roots:
    """Every generation's root of one join token, derived once each (a derivation
    costs a key and a signature) and kept."""

    def __init__(self, join_token: str) -> None:
        """Raises ConfigError without a token."""
        self.join_token = join_token
        self.cluster = cluster_name(join_token) if join_token else ""
        self.derived: dict[int, Root] = {0: derive_root(join_token)}
        self.crossed: dict[int, x509.Certificate] = {}

    def __repr__(self) -> str:
        return f"<Roots {self.cluster} derived={sorted(self.derived)}>"

    def get(self, generation: int) -> Root:
        if generation not in self.derived:
            self.derived[generation] = derive_root(self.join_token, generation)
        return self.derived[generation]

    def cross_signed(self, generation: int) -> x509.Certificate:
        """``generation`` (at least 1) as issued by the one before."""
        if generation not in self.crossed:
            self.crossed[generation] = cross_sign(self.get(generation),
                                                  self.get(generation - 1))
        return self.crossed[generation]

    def chain(self, generation: int, oldest: int) -> list[x509.Certificate]:
        """As ``chain_to``, from the cache."""
        return [self.cross_signed(g) for g in range(generation, oldest, -1)]

    def presented(self, generation: int) -> list[x509.Certificate]:
        """What is sent after a leaf of ``generation``: the cross-signed certificates
        down to generation 0 (at most ``CHAIN_LINKS``), so a peer or client that has
        not heard of the newer roots, even one that knows only the founding root (a
        server joining with nothing but the token), verifies it. A pruned root among
        them changes nothing for those who no longer trust it: they stop at a root
        they trust."""
        return self.chain(generation, max(0, generation - CHAIN_LINKS))

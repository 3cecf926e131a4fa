"""Workload identities, pure: SPIFFE IDs, certificate signing requests checked and
answered with a leaf, and leaves verified against the trust bundle. The clock is an
argument; nothing here touches a file or socket.

A workload's identity is ``spiffe://<cluster>.meshlet/ns/<namespace>/svc/<service>``
(the trust domain is the cluster's, as its servers' ``.../server/<id>`` are). The
workload makes its key and sends only a CSR; the CA takes the CSR's public key and
nothing else from it: whatever names it asks for, the leaf names exactly the identity
the caller was allowed (``service`` write on it), as a single URI SAN, as SPIFFE's
X.509-SVID says. Leaves live 72 hours and are renewed at half their life, so one
missed renewal still leaves a day and a half to retry.
"""

from __future__ import annotations

import datetime
import re
from collections.abc import Sequence
from dataclasses import dataclass

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from meshlet.errors import ConfigError
from meshlet.security.ca import BACKDATE, Root, signed_by

WORKLOAD_LIFETIME = datetime.timedelta(hours=72)
WORKLOAD_RENEWAL = 1 / 2  # renew at half-life
DEFAULT_NAMESPACE = "default"
MAX_CSR = 4096   # bytes of PEM: a P-256 CSR is ~500, an RSA-4096 one ~1700
MAX_CHAIN = 8    # certificates in a chain that is verified (leaf and intermediates)
MIN_RSA_BITS = 2048
LABEL = re.compile(r"[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?")  # RFC 1123 label
SPIFFE = re.compile(r"^spiffe://(?P<domain>[a-z0-9.-]+)/ns/(?P<ns>[^/]+)/svc/(?P<svc>[^/]+)$")


@dataclass(frozen=True)
class SpiffeId:
    """A workload's identity in a trust domain."""

    trust_domain: str
    namespace: str
    service: str

    def __str__(self) -> str:
        return f"spiffe://{self.trust_domain}/ns/{self.namespace}/svc/{self.service}"

    @classmethod
    def parse(cls, uri: str) -> SpiffeId:
        """Raises ConfigError for a URI that is not a workload's SPIFFE ID."""
        found = SPIFFE.match(uri)
        if found is None:
            raise ConfigError(f"{uri[:200]!r} is not a workload SPIFFE ID "
                              "(spiffe://DOMAIN/ns/NAMESPACE/svc/SERVICE)", "spiffe_id")
        return cls(found["domain"], check_label(found["ns"], "namespace"),
                   check_label(found["svc"], "service"))


def trust_domain(cluster: str) -> str:
    return f"{cluster}.meshlet"


def check_label(value: object, field: str) -> str:
    """``value`` if it is a DNS label (lower case, digits, '-', at most 63); raises
    ConfigError naming ``field``."""
    if not isinstance(value, str) or not LABEL.fullmatch(value):
        raise ConfigError(f"{field}: {str(value)[:80]!r} is not a valid name (lower-case "
                          "letters, digits and '-', starting and ending with a letter or "
                          "digit, at most 63 characters)", field)
    return value


def workload_id(cluster: str, service: str, namespace: str = DEFAULT_NAMESPACE) -> SpiffeId:
    """Raises ConfigError for a service or namespace that is not a DNS label."""
    return SpiffeId(trust_domain(cluster), check_label(namespace, "namespace"),
                    check_label(service, "service"))


def load_csr(pem: object) -> x509.CertificateSigningRequest:
    """A CSR whose signature is its key's, and whose key is EC P-256 or RSA of at
    least 2048 bits. Raises ConfigError saying what is wrong."""
    if not isinstance(pem, str) or not pem.strip():
        raise ConfigError("csr: expected a PEM certificate signing request", "csr")
    if len(pem) > MAX_CSR:
        raise ConfigError(f"csr: longer than {MAX_CSR} bytes", "csr")
    try:
        csr = x509.load_pem_x509_csr(pem.encode())
        key = csr.public_key()
    except (ValueError, UnicodeEncodeError, TypeError):
        raise ConfigError("csr: not a PEM certificate signing request", "csr") from None
    if isinstance(key, ec.EllipticCurvePublicKey):
        if not isinstance(key.curve, ec.SECP256R1):
            raise ConfigError(f"csr: an EC key on {key.curve.name}; only P-256 is taken",
                              "csr")
    elif isinstance(key, rsa.RSAPublicKey):
        if key.key_size < MIN_RSA_BITS:
            raise ConfigError(f"csr: an RSA key of {key.key_size} bits; at least "
                              f"{MIN_RSA_BITS} are needed", "csr")
    else:
        raise ConfigError("csr: the key must be EC P-256 or RSA", "csr")
    try:
        valid = csr.is_signature_valid
    except (ValueError, TypeError):  # an algorithm the library does not know
        valid = False
    if not valid:
        raise ConfigError("csr: its signature does not verify with its own key", "csr")
    return csr


def issue_workload(root: Root, csr: x509.CertificateSigningRequest, spiffe_id: SpiffeId,
                   now: datetime.datetime,
                   lifetime: datetime.timedelta = WORKLOAD_LIFETIME) -> x509.Certificate:
    """A leaf for the CSR's key naming ``spiffe_id`` and nothing else; the CSR's own
    names and extensions are ignored. Raises ConfigError for a CSR whose signature
    does not verify, or an identity of another trust domain."""
    if not csr.is_signature_valid:
        raise ConfigError("csr: its signature does not verify with its own key", "csr")
    if spiffe_id.trust_domain != trust_domain(root.cluster):
        raise ConfigError(f"{spiffe_id} is not of this cluster's trust domain "
                          f"{trust_domain(root.cluster)}", "spiffe_id")
    public = csr.public_key()
    assert isinstance(public, ec.EllipticCurvePublicKey | rsa.RSAPublicKey)
    return (x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME,
                                                        spiffe_id.service)]))
            .issuer_name(root.cert.subject).public_key(public)
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - BACKDATE).not_valid_after(now + lifetime)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=True, content_commitment=False,
                                         key_encipherment=isinstance(public, rsa.RSAPublicKey),
                                         data_encipherment=False,
                                         key_agreement=isinstance(public,
                                                                  ec.EllipticCurvePublicKey),
                                         key_cert_sign=False, crl_sign=False,
                                         encipher_only=False, decipher_only=False),
                           critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH,
                                                  ExtendedKeyUsageOID.CLIENT_AUTH]),
                           critical=False)
            .add_extension(x509.SubjectAlternativeName(
                [x509.UniformResourceIdentifier(str(spiffe_id))]), critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(public), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(
                root.key.public_key()), critical=False)
            .sign(root.key, hashes.SHA256()))


def _valid_at(cert: x509.Certificate, now: datetime.datetime, what: str) -> None:
    if not cert.not_valid_before_utc <= now <= cert.not_valid_after_utc:
        raise ConfigError(f"the {what} is valid only from {cert.not_valid_before_utc} "
                          f"to {cert.not_valid_after_utc}", "cert")


def _is_ca(cert: x509.Certificate) -> bool:
    try:
        return bool(cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca)
    except x509.ExtensionNotFound:
        return False


def spiffe_id_of(cert: x509.Certificate) -> SpiffeId:
    """The one SPIFFE ID a workload leaf names. Raises ConfigError if it names none,
    or more than one URI."""
    try:
        sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        raise ConfigError("the certificate names no SPIFFE ID", "cert") from None
    uris = sans.get_values_for_type(x509.UniformResourceIdentifier)
    if len(uris) != 1:
        raise ConfigError(f"the certificate names {len(uris)} URIs, not one SPIFFE ID",
                          "cert")
    return SpiffeId.parse(uris[0])


def verify_workload(chain: Sequence[x509.Certificate],
                    trusted_roots: Sequence[x509.Certificate],
                    now: datetime.datetime) -> SpiffeId:
    """The identity ``chain[0]`` (a leaf, then any intermediates: the cross-signed
    certificates of newer roots) proves at ``now`` against ``trusted_roots``.
    Raises ConfigError saying what is wrong."""
    if not chain:
        raise ConfigError("no certificate", "cert")
    if len(chain) > MAX_CHAIN:
        raise ConfigError(f"a chain of {len(chain)} certificates; at most {MAX_CHAIN}",
                          "cert")
    leaf = chain[0]
    if _is_ca(leaf):
        raise ConfigError("the certificate is a CA's, not a workload's", "cert")
    _valid_at(leaf, now, "certificate")
    spiffe = spiffe_id_of(leaf)
    current, rest = leaf, list(chain[1:])
    for _ in range(MAX_CHAIN):
        if any(signed_by(current, root) for root in trusted_roots):
            return spiffe
        issuer = next((c for c in rest if _is_ca(c) and signed_by(current, c)), None)
        if issuer is None:
            raise ConfigError("the certificate was not issued by a trusted root of this "
                              "cluster", "cert")
        _valid_at(issuer, now, "intermediate certificate")
        rest.remove(issuer)
        current = issuer
    raise ConfigError("the chain does not reach a trusted root", "cert")


def pem(cert: x509.Certificate) -> str:
    return cert.public_bytes(serialization.Encoding.PEM).decode()


def load_chain(text: str | bytes) -> list[x509.Certificate]:
    """Every certificate in PEM ``text``; raises ConfigError if there is none."""
    data = text.encode() if isinstance(text, str) else text
    try:
        certs = x509.load_pem_x509_certificates(data)
    except ValueError:
        raise ConfigError("not PEM certificates", "cert") from None
    return certs

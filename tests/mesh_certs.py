"""Test CAs and workload certificates written as PEM files, as the agent keeps them:
a root, leaves naming a service's SPIFFE ID, and the ways a leaf can be wrong (another
CA's, expired, naming another service)."""

from __future__ import annotations

import datetime
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from meshlet.proxy.config import TlsConfig

TRUST_DOMAIN = "ctest.meshlet"
NOW = datetime.datetime.now(datetime.UTC)


def spiffe(service: str, namespace: str = "default") -> str:
    return f"spiffe://{TRUST_DOMAIN}/ns/{namespace}/svc/{service}"


def _pem_key(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


@dataclass
class MeshCa:
    """A root CA whose certificate is written to ``dir/<name>-root.pem``."""

    name: str
    dir: Path
    key: ec.EllipticCurvePrivateKey
    cert: x509.Certificate

    @classmethod
    def make(cls, dir: Path, name: str = "ca") -> MeshCa:
        key = ec.generate_private_key(ec.SECP256R1())
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"test {name}")])
        cert = (x509.CertificateBuilder().subject_name(subject).issuer_name(subject)
                .public_key(key.public_key()).serial_number(x509.random_serial_number())
                .not_valid_before(NOW - datetime.timedelta(days=1))
                .not_valid_after(NOW + datetime.timedelta(days=30))
                .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
                .sign(key, hashes.SHA256()))
        ca = cls(name, dir, key, cert)
        ca.roots_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        return ca

    @property
    def roots_file(self) -> Path:
        return self.dir / f"{self.name}-root.pem"

    def leaf(self, service: str, label: str = "", *, uri: str | None = None,
             not_before: datetime.datetime | None = None,
             not_after: datetime.datetime | None = None) -> tuple[Path, Path]:
        """(cert file, key file) of a leaf for ``service`` (or naming ``uri``)."""
        key = ec.generate_private_key(ec.SECP256R1())
        cert = (x509.CertificateBuilder()
                .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, service)]))
                .issuer_name(self.cert.subject).public_key(key.public_key())
                .serial_number(x509.random_serial_number())
                .not_valid_before(not_before or NOW - datetime.timedelta(minutes=5))
                .not_valid_after(not_after or NOW + datetime.timedelta(hours=72))
                .add_extension(x509.BasicConstraints(ca=False, path_length=None),
                               critical=True)
                .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH,
                                                      ExtendedKeyUsageOID.CLIENT_AUTH]),
                               critical=False)
                .add_extension(x509.SubjectAlternativeName(
                    [x509.UniformResourceIdentifier(uri or spiffe(service))]), critical=False)
                .sign(self.key, hashes.SHA256()))
        stem = self.dir / f"{self.name}-{service}{label}"
        cert_file, key_file = stem.with_suffix(".crt"), stem.with_suffix(".key")
        cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        key_file.write_bytes(_pem_key(key))
        key_file.chmod(0o600)
        return cert_file, key_file

    def tls(self, service: str, label: str = "", serial: str = "") -> TlsConfig:
        """A sidecar's ``tls`` block for a fresh leaf of ``service``."""
        cert, key = self.leaf(service, label)
        return TlsConfig(str(cert), str(key), str(self.roots_file), TRUST_DOMAIN,
                         serial=serial or label)

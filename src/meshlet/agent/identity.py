"""Each mesh workload's identity on disk, kept current: its key (made here, never
sent), its certificate from the cluster CA and the trust bundle, as PEM files in a
private directory of the workload, for its sidecar to load:

- ``key.pem``: the workload's EC P-256 key, 0600, made once and kept across renewals,
  so a renewed certificate always matches the key beside it;
- ``cert.pem``: the leaf naming ``spiffe://<cluster>.meshlet/ns/<ns>/svc/<service>``,
  followed by the cross-signed certificates of newer roots (a peer that has not heard
  of a rotation yet still verifies it);
- ``roots.pem``: every root the cluster trusts.

Each is replaced whole (a temporary file renamed over it), the trust bundle before the
certificate, so a reader sees the old files or the new ones, and the certificate on
disk stays valid until the next one is written. A certificate is issued again at half
its life and as soon as the active root changes (one blocking query per agent,
``roots_watch.py``); a failure is retried with backoff while the one on disk is still
good.
"""

from __future__ import annotations

import asyncio
import datetime
import hashlib
import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from meshlet.agent.roots_watch import CaCalls, RootsWatch
from meshlet.backoff import Backoff
from meshlet.errors import ConfigError, MeshletError
from meshlet.private_files import private_dir, write_private
from meshlet.proxy.config import TlsConfig
from meshlet.security import ca, identity
from meshlet.security.identity import DEFAULT_NAMESPACE, SpiffeId

log = logging.getLogger(__name__)
RECHECK = 3600.0  # look at the clock at least this often (it may jump)


def utcnow() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


@dataclass(frozen=True)
class Due:
    """What to do about a workload's certificate now: issue it again (and why), or
    wait ``wait`` seconds."""

    renew: bool
    reason: str = ""
    wait: float = 0.0


def names_issuer(leaf: x509.Certificate, root_pem: str) -> bool:
    """Whether ``leaf`` names the root of ``root_pem`` as its issuer's key."""
    try:
        aki = leaf.extensions.get_extension_for_class(x509.AuthorityKeyIdentifier).value
        root = x509.load_pem_x509_certificate(root_pem.encode())
    except (x509.ExtensionNotFound, ValueError):
        return False
    return aki.key_identifier == x509.SubjectKeyIdentifier.from_public_key(
        root.public_key()).digest


def due(leaf: x509.Certificate | None, roots: dict[str, Any] | None,
        now: datetime.datetime) -> Due:
    """Pure: whether a workload holding ``leaf`` must have it issued again, given the
    trust bundle ``roots`` (the ``/v1/ca/roots`` answer, None before the first) at
    ``now``."""
    if leaf is None:
        return Due(True, "no certificate yet")
    if ca.needs_renewal(leaf, now, identity.WORKLOAD_RENEWAL):
        return Due(True, "half its life has passed")
    if roots is not None:
        active = next((r for r in roots.get("roots", ()) if r.get("active")), None)
        if active is not None and not names_issuer(leaf, active["cert"]):
            return Due(True, f"root generation {active['generation']} is now active")
    start, end = leaf.not_valid_before_utc, leaf.not_valid_after_utc
    at = start + (end - start) * identity.WORKLOAD_RENEWAL
    return Due(False, wait=min(RECHECK, max(0.0, (at - now).total_seconds())))


class WorkloadIdentity:
    """One workload's key, certificate and trust bundle in ``directory``."""

    def __init__(self, client: CaCalls, roots: RootsWatch, service: str, directory: Path,
                 namespace: str = DEFAULT_NAMESPACE,
                 clock: Callable[[], datetime.datetime] = utcnow) -> None:
        self.client = client
        self.roots = roots
        self.service = service
        self.namespace = namespace
        self.directory = directory
        self.clock = clock
        self.ready = asyncio.Event()  # set once a valid certificate is on disk
        self.spiffe_id: SpiffeId | None = None
        self.issued = 0    # certificates issued, and
        self.failures = 0  # attempts that failed (for logs and tests)
        # Called whenever the files change (a certificate issued, a bundle rewritten):
        # the sidecar is told to load them.
        self.on_change: Callable[[], None] = lambda: None

    def __repr__(self) -> str:
        return (f"<WorkloadIdentity {self.spiffe_id or self.service} issued={self.issued} "
                f"failures={self.failures}>")

    @property
    def key_file(self) -> Path:
        return self.directory / "key.pem"

    @property
    def cert_file(self) -> Path:
        return self.directory / "cert.pem"

    @property
    def roots_file(self) -> Path:
        return self.directory / "roots.pem"

    def paths(self) -> dict[str, str]:
        """Where the sidecar finds the files (its TLS settings, next)."""
        return {"key": str(self.key_file), "cert": str(self.cert_file),
                "roots": str(self.roots_file)}

    def tls(self) -> TlsConfig:
        """The sidecar's ``tls`` block for the files on disk (once ``ready``): their
        paths, the trust domain the certificate names, and a serial that changes with
        the certificate or the bundle."""
        leaf = self.leaf()
        if leaf is None:
            raise ConfigError(f"{self.service}: no certificate on disk yet", "tls")
        try:
            sans = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName)
            sid = SpiffeId.parse(sans.value.get_values_for_type(
                x509.UniformResourceIdentifier)[0])
        except (x509.ExtensionNotFound, IndexError):
            raise ConfigError(f"{self.service}: the certificate names no SPIFFE ID",
                              "tls") from None
        bundle = hashlib.sha256(self.roots_file.read_bytes()).hexdigest()[:16]
        return TlsConfig(str(self.cert_file), str(self.key_file), str(self.roots_file),
                         sid.trust_domain, sid.namespace,
                         f"{leaf.serial_number:x}/{bundle}")

    def key(self) -> ec.EllipticCurvePrivateKey:
        """The workload's key, made (0600) the first time."""
        try:
            key = serialization.load_pem_private_key(self.key_file.read_bytes(), None)
            if isinstance(key, ec.EllipticCurvePrivateKey):
                return key
        except (FileNotFoundError, ValueError):
            pass
        key = ca.new_key()
        write_private(self.key_file, key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption()))
        return key

    def leaf(self) -> x509.Certificate | None:
        """The certificate on disk if it is for this workload's key, else None."""
        try:
            chain = identity.load_chain(self.cert_file.read_bytes())
            key = serialization.load_pem_private_key(self.key_file.read_bytes(), None)
        except (FileNotFoundError, ConfigError, ValueError):
            return None
        if not chain or chain[0].public_key() != key.public_key():
            return None
        return chain[0]

    def valid(self) -> bool:
        leaf, now = self.leaf(), self.clock()
        return leaf is not None and leaf.not_valid_before_utc <= now <= \
            leaf.not_valid_after_utc

    async def issue(self) -> None:
        """Send a CSR, check the answer, write the trust bundle then the certificate.
        Raises MeshletError (ConfigError for an answer that does not verify)."""
        key = self.key()
        csr = (x509.CertificateSigningRequestBuilder()
               .subject_name(x509.Name([]))
               .sign(key, hashes.SHA256())
               .public_bytes(serialization.Encoding.PEM).decode())
        answer = await self.client.ca_sign(csr, self.service, self.namespace)
        chain = identity.load_chain(answer["cert"] + "".join(answer["chain"]))
        sid = identity.verify_workload(chain, identity.load_chain(answer["roots"]),
                                       self.clock())
        if (sid.service, sid.namespace) != (self.service, self.namespace) or \
                chain[0].public_key() != key.public_key():
            raise ConfigError(f"the CA answered a certificate for {sid}, not for this "
                              "workload's key and service", "cert")
        write_private(self.roots_file, answer["roots"])
        write_private(self.cert_file, answer["cert"] + "".join(answer["chain"]))
        self.spiffe_id = sid
        self.issued += 1
        self.on_change()
        log.info("%s: certificate issued for %s by root generation %s, valid until %s",
                 self.service, sid, answer["generation"], answer["not_after"])

    def refresh_roots(self) -> None:
        """Write the trust bundle if it changed without a new certificate (a root
        pruned)."""
        body = self.roots.current
        if body is None or not body.get("bundle"):
            return
        try:
            if self.roots_file.read_text() == body["bundle"]:
                return
        except FileNotFoundError:
            pass
        write_private(self.roots_file, body["bundle"])
        self.on_change()

    async def run(self) -> None:
        """Runs while the workload does."""
        private_dir(self.directory)
        backoff = Backoff(base=1.0, cap=60.0)
        while True:
            changed = self.roots.changed
            decision = due(self.leaf(), self.roots.current, self.clock())
            if not decision.renew:
                self.refresh_roots()
                self.ready.set()
                wait = decision.wait
            else:
                try:
                    await self.issue()
                except MeshletError as exc:
                    self.failures += 1
                    wait = backoff.next_delay()
                    log.warning("%s: cannot get a certificate (%s; %s); retrying in %.0fs",
                                self.service, exc, decision.reason, wait)
                else:
                    if not due(self.leaf(), self.roots.current, self.clock()).renew:
                        backoff.reset()
                        continue
                    # Signed by a root the watch says is no longer active (a server
                    # behind the others): not again at once.
                    wait = backoff.next_delay()
                if self.valid():
                    self.ready.set()
            try:
                await asyncio.wait_for(changed.wait(), wait)
            except TimeoutError:
                pass

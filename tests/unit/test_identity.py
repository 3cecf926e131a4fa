"""Workload identities and root generations, pure: SPIFFE IDs, CSRs answered with a
leaf that names exactly its identity, leaves verified (or refused) against the trust
bundle, root generations derived and cross-signed, and the rotation recorded in the
replicated state."""

from __future__ import annotations

import datetime
import hashlib

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from meshlet.errors import ConfigError, Conflict, NotFound
from meshlet.security import ca, identity
from meshlet.security.identity import SpiffeId, workload_id
from meshlet.state import StateMachine
from meshlet.state.ca import CaRootPrune, CaRootRotate, CaRootSet

TOKEN = "x" * 43
NOW = datetime.datetime(2026, 12, 2, 12, 0, tzinfo=datetime.UTC)
# What generation 0 was before generations existed (main's derive_root, this token).
GEN0_SHA256 = "f31cb128b236d7afb67e0b636071f2628e3a8761338c7f79c60f736718df818e"


def csr_for(key: ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey,
            names: list[x509.GeneralName] | None = None) -> str:
    builder = x509.CertificateSigningRequestBuilder().subject_name(
        x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "anything")]))
    if names:
        builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=False)
    return builder.sign(key, hashes.SHA256()).public_bytes(
        serialization.Encoding.PEM).decode()


def leaf_for(root: ca.Root, service: str = "web", when: datetime.datetime = NOW
             ) -> x509.Certificate:
    csr = identity.load_csr(csr_for(ca.new_key()))
    return identity.issue_workload(root, csr, workload_id(root.cluster, service), when)


def test_a_spiffe_id_names_cluster_namespace_and_service() -> None:
    sid = workload_id("c1234", "web")
    assert str(sid) == "spiffe://c1234.meshlet/ns/default/svc/web"
    assert SpiffeId.parse(str(sid)) == sid
    assert str(workload_id("c1234", "api", "shop")) == "spiffe://c1234.meshlet/ns/shop/svc/api"
    for bad in ("Web", "-web", "web-", "a" * 64, "we/b", "", "web.x", "web\n"):
        with pytest.raises(ConfigError, match="service"):
            workload_id("c1234", bad)
    with pytest.raises(ConfigError, match="namespace"):
        workload_id("c1234", "web", "a_b")
    with pytest.raises(ConfigError):
        SpiffeId.parse("spiffe://c1234.meshlet/server/s1")


def test_a_leaf_names_exactly_its_identity_whatever_the_csr_asks() -> None:
    root = ca.derive_root(TOKEN)
    asked = [x509.DNSName("evil.example"),
             x509.UniformResourceIdentifier(f"spiffe://{root.cluster}.meshlet/ns/default/svc/db"),
             x509.UniformResourceIdentifier(ca.server_uri(root.cluster, "s1"))]
    key = ca.new_key()
    csr = identity.load_csr(csr_for(key, asked))
    sid = workload_id(root.cluster, "web")
    leaf = identity.issue_workload(root, csr, sid, NOW)
    sans = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName)
    assert list(sans.value) == [x509.UniformResourceIdentifier(str(sid))]
    assert leaf.public_key() == key.public_key()
    assert not leaf.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    eku = leaf.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert set(eku) == {ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH}
    assert leaf.not_valid_after_utc - NOW == identity.WORKLOAD_LIFETIME
    assert identity.verify_workload([leaf], [root.cert], NOW) == sid
    assert ca.server_id_of(leaf, root.cluster) is None


def test_csrs_refused_for_their_key_size_or_signature() -> None:
    with pytest.raises(ConfigError, match="P-256"):
        identity.load_csr(csr_for(ec.generate_private_key(ec.SECP384R1())))
    with pytest.raises(ConfigError, match="2048"):
        identity.load_csr(csr_for(rsa.generate_private_key(65537, 1024)))
    assert identity.load_csr(csr_for(rsa.generate_private_key(65537, 2048)))
    for junk in ("", "hello", 42, "-----BEGIN CERTIFICATE REQUEST-----\nAAAA\n"
                 "-----END CERTIFICATE REQUEST-----\n"):
        with pytest.raises(ConfigError, match="csr"):
            identity.load_csr(junk)
    with pytest.raises(ConfigError, match="longer"):
        identity.load_csr("x" * (identity.MAX_CSR + 1))
    good = x509.load_pem_x509_csr(csr_for(ca.new_key()).encode())
    der = bytearray(good.public_bytes(serialization.Encoding.DER))
    der[-3] ^= 0x01  # inside the signature
    forged = x509.load_der_x509_csr(bytes(der)).public_bytes(serialization.Encoding.PEM)
    with pytest.raises(ConfigError, match="signature"):
        identity.load_csr(forged.decode())


def test_expired_early_foreign_and_ca_chains_are_refused() -> None:
    root, other = ca.derive_root(TOKEN), ca.derive_root("y" * 43)
    leaf = leaf_for(root)
    with pytest.raises(ConfigError, match="valid only"):
        identity.verify_workload([leaf], [root.cert], NOW + datetime.timedelta(hours=73))
    with pytest.raises(ConfigError, match="valid only"):
        identity.verify_workload([leaf], [root.cert], NOW - datetime.timedelta(hours=1))
    with pytest.raises(ConfigError, match="not issued by a trusted root"):
        identity.verify_workload([leaf], [other.cert], NOW)
    with pytest.raises(ConfigError, match="CA's"):
        identity.verify_workload([root.cert], [root.cert], NOW)
    server = ca.issue_server(root, ca.new_key().public_key(), "s1", [], NOW)
    with pytest.raises(ConfigError, match=r"URIs|SPIFFE"):
        identity.verify_workload([server], [root.cert], NOW)
    with pytest.raises(ConfigError, match="trust domain"):
        csr = identity.load_csr(csr_for(ca.new_key()))
        identity.issue_workload(root, csr, workload_id(other.cluster, "web"), NOW)


def test_workload_leaves_renew_at_half_life_servers_at_two_thirds() -> None:
    leaf = leaf_for(ca.derive_root(TOKEN))
    half = identity.WORKLOAD_LIFETIME / 2
    assert not ca.needs_renewal(leaf, NOW + half * 0.9, identity.WORKLOAD_RENEWAL)
    assert ca.needs_renewal(leaf, NOW + half, identity.WORKLOAD_RENEWAL)
    assert not ca.needs_renewal(leaf, NOW + half)  # the servers' default: 2/3


def test_generation_zero_is_the_root_clusters_already_have() -> None:
    assert hashlib.sha256(ca.derive_root(TOKEN).pem).hexdigest() == GEN0_SHA256
    assert ca.derive_root(TOKEN, 0).pem == ca.derive_root(TOKEN).pem
    one, again = ca.derive_root(TOKEN, 1), ca.derive_root(TOKEN, 1)
    assert one.pem == again.pem and one.generation == 1
    assert one.pem != ca.derive_root(TOKEN).pem
    assert one.cert.subject == ca.derive_root(TOKEN).cert.subject  # keys tell them apart
    with pytest.raises(ConfigError):
        ca.derive_root(TOKEN, -1)


def test_a_cross_signed_chain_verifies_against_the_old_root_alone() -> None:
    r0, r1, r2 = (ca.derive_root(TOKEN, g) for g in range(3))
    cross = ca.cross_sign(r1, r0)
    assert cross.public_key() == r1.cert.public_key() and cross.subject == r1.cert.subject
    cross.verify_directly_issued_by(r0.cert)
    assert ca.cross_sign(r1, r0) == cross  # deterministic, as the roots are
    assert ca.chain_to(TOKEN, 1, 0) == [cross]
    assert ca.chain_to(TOKEN, 1, 1) == []
    leaf = leaf_for(r1)
    sid = workload_id(r1.cluster, "web")
    assert identity.verify_workload([leaf, cross], [r0.cert], NOW) == sid
    assert identity.verify_workload([leaf], [r1.cert], NOW) == sid
    with pytest.raises(ConfigError, match="not issued"):
        identity.verify_workload([leaf], [r0.cert], NOW)  # without the cross-signed one
    two = leaf_for(r2)
    assert identity.verify_workload([two, *ca.chain_to(TOKEN, 2, 0)], [r0.cert], NOW) == sid


def rotate_command(generation: int, at: datetime.datetime = NOW) -> CaRootRotate:
    new, old = ca.derive_root(TOKEN, generation), ca.derive_root(TOKEN, generation - 1)
    return CaRootRotate(generation, new.pem.decode(), identity.pem(ca.cross_sign(new, old)),
                        at.isoformat())


def test_the_state_keeps_every_trusted_root_and_no_key() -> None:
    sm = StateMachine()
    r0 = ca.derive_root(TOKEN)
    assert isinstance(sm.check(rotate_command(1)), Conflict)  # no root recorded yet
    assert sm.apply(1, CaRootSet(r0.cluster, r0.pem.decode())).ok
    assert sm.ca.generations() == (0, (0,))
    assert sm.apply(2, rotate_command(1)).ok
    assert sm.ca.generations() == (1, (0, 1))
    assert sm.ca.bundle() == r0.pem.decode() + ca.derive_root(TOKEN, 1).pem.decode()
    assert isinstance(sm.check(rotate_command(1)), Conflict)  # a second one, racing
    skipped = rotate_command(3)
    assert isinstance(sm.check(skipped), Conflict)
    wrong = rotate_command(2)
    forged = CaRootRotate(2, wrong.cert, identity.pem(ca.cross_sign(
        ca.derive_root(TOKEN, 2), ca.derive_root(TOKEN, 0))), wrong.rotated_at)
    assert isinstance(sm.check(forged), ConfigError)
    assert isinstance(sm.check(CaRootRotate(2, wrong.cert, wrong.cross_signed, "yesterday")),
                      ConfigError)
    assert isinstance(sm.check(CaRootPrune(1)), Conflict)  # the active one
    assert isinstance(sm.check(CaRootPrune(7)), NotFound)
    text = sm.snapshot()
    assert b"PRIVATE" not in text
    copy = StateMachine()
    copy.restore(text)
    assert copy.snapshot() == text and copy.ca.generations() == (1, (0, 1))
    assert sm.apply(3, CaRootPrune(0)).ok
    assert sm.ca.generations() == (1, (1,)) and sm.ca.root == r0.pem.decode()


def test_the_leader_prunes_a_root_once_its_last_leaf_has_expired() -> None:
    sm = StateMachine()
    r0 = ca.derive_root(TOKEN)
    sm.apply(1, CaRootSet(r0.cluster, r0.pem.decode()))
    sm.apply(2, rotate_command(1, NOW))
    longest = ca.SERVER_LIFETIME
    assert sm.ca.prunable(NOW + longest - datetime.timedelta(seconds=1), longest) == []
    assert sm.ca.prunable(NOW + longest, longest) == [0]
    sm.apply(3, rotate_command(2, NOW + longest))
    assert sm.ca.prunable(NOW + longest, longest) == [0]  # 1 issued until just now


def test_a_snapshot_from_before_generations_loads_its_one_root() -> None:
    sm = StateMachine()
    r0 = ca.derive_root(TOKEN)
    sm.apply(1, CaRootSet(r0.cluster, r0.pem.decode()))
    body = sm.ca.dump()
    del body["roots"]
    sm.ca.load(body)
    assert sm.ca.generations() == (0, (0,)) and sm.ca.active() is not None

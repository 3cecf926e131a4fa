"""The cluster CA: a root derived from the join token (the same on every server),
server certificates issued and verified with the clock passed in, the root recorded in
the replicated state, and a server's credentials on disk."""

from __future__ import annotations

import datetime
import ssl
import stat
from pathlib import Path

import pytest
from cryptography import x509

from meshlet.errors import ConfigError, Conflict
from meshlet.security import ca
from meshlet.security.credentials import ensure_server_credentials
from meshlet.server.tls import ServerTls
from meshlet.state import StateMachine
from meshlet.state.ca import CaRootSet

TOKEN = "x" * 43
NOW = datetime.datetime(2026, 12, 2, 12, 0, tzinfo=datetime.UTC)


def test_every_server_derives_the_same_root_from_the_token() -> None:
    one, two = ca.derive_root(TOKEN), ca.derive_root(TOKEN)
    assert one.pem == two.pem and one.cluster == two.cluster
    other = ca.derive_root("y" * 43)
    assert other.cluster != one.cluster and other.pem != one.pem
    constraints = one.cert.extensions.get_extension_for_class(x509.BasicConstraints)
    assert constraints.value.ca and constraints.critical


def test_a_server_certificate_names_its_server_and_verifies() -> None:
    root = ca.derive_root(TOKEN)
    cert = ca.issue_server(root, ca.new_key().public_key(), "s1", ["127.0.0.1", "0.0.0.0"],
                           NOW)
    assert ca.verify_server(cert, root, NOW) == "s1"
    sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert sans.get_values_for_type(x509.DNSName) == [f"server.{root.cluster}.meshlet"]
    assert [str(ip) for ip in sans.get_values_for_type(x509.IPAddress)] == ["127.0.0.1"]


def test_a_certificate_from_another_cluster_or_out_of_date_is_refused() -> None:
    root, other = ca.derive_root(TOKEN), ca.derive_root("y" * 43)
    foreign = ca.issue_server(other, ca.new_key().public_key(), "s1", [], NOW)
    with pytest.raises(ConfigError, match="not issued by this cluster"):
        ca.verify_server(foreign, root, NOW)
    cert = ca.issue_server(root, ca.new_key().public_key(), "s1", [], NOW)
    with pytest.raises(ConfigError, match="valid only"):
        ca.verify_server(cert, root, NOW + ca.SERVER_LIFETIME + datetime.timedelta(days=1))
    assert not ca.needs_renewal(cert, NOW)
    assert ca.needs_renewal(cert, NOW + ca.SERVER_LIFETIME * 0.7)


def test_the_root_is_recorded_once_in_the_state() -> None:
    root = ca.derive_root(TOKEN)
    sm = StateMachine()
    record = CaRootSet(root.cluster, root.pem.decode())
    assert sm.apply(1, record).ok and sm.ca.root == root.pem.decode()
    assert sm.apply(2, record).ok  # the same again: nothing changes
    assert sm.ca.index == 1
    other = ca.derive_root("y" * 43)
    refused = sm.apply(3, CaRootSet(other.cluster, other.pem.decode()))
    assert isinstance(refused.error, Conflict) and sm.ca.root == root.pem.decode()
    assert isinstance(sm.check(CaRootSet(root.cluster, "not a certificate")), ConfigError)
    copy = StateMachine()
    copy.restore(sm.snapshot())
    assert copy.snapshot() == sm.snapshot() and copy.ca.cluster == root.cluster


def test_credentials_on_disk_are_private_kept_and_renewed(tmp_path: Path) -> None:
    creds = ensure_server_credentials(tmp_path, TOKEN, "s1", ["127.0.0.1"], NOW)
    assert stat.S_IMODE(creds.key_file.stat().st_mode) == 0o600
    assert stat.S_IMODE(creds.cert_file.parent.stat().st_mode) == 0o700
    assert creds.ca_file.read_bytes() == ca.derive_root(TOKEN).pem
    key, cert = creds.key_file.read_bytes(), creds.cert_file.read_bytes()
    ensure_server_credentials(tmp_path, TOKEN, "s1", ["127.0.0.1"], NOW)
    assert (creds.key_file.read_bytes(), creds.cert_file.read_bytes()) == (key, cert)
    ensure_server_credentials(tmp_path, TOKEN, "s1", ["127.0.0.1", "10.0.0.1"], NOW)
    assert creds.cert_file.read_bytes() != cert  # a new address: a new certificate
    cert = creds.cert_file.read_bytes()
    later = NOW + ca.SERVER_LIFETIME * 0.8
    ensure_server_credentials(tmp_path, TOKEN, "s1", ["127.0.0.1", "10.0.0.1"], later)
    renewed = x509.load_pem_x509_certificate(creds.cert_file.read_bytes())
    assert renewed.not_valid_after_utc > later + ca.SERVER_LIFETIME / 2
    assert creds.key_file.read_bytes() == key  # the key stays the server's own


def test_a_running_server_renews_its_certificate_into_its_contexts(tmp_path: Path) -> None:
    tls = ServerTls(tmp_path, TOKEN, "s1", ["127.0.0.1"])
    contexts = [tls.api(), tls.raft().server]
    first = x509.load_pem_x509_certificate(tls.creds.cert_file.read_bytes())
    assert not tls.renew()  # not due yet
    assert handshake(contexts[0], tls) == first
    # The certificate on disk as it would be 70 days on: due for renewal.
    old = datetime.datetime.now(datetime.UTC) - datetime.timedelta(days=70)
    ensure_server_credentials(tmp_path, TOKEN, "s1", ["127.0.0.1"], old)
    assert tls.renew()
    renewed = x509.load_pem_x509_certificate(tls.creds.cert_file.read_bytes())
    assert renewed.serial_number != first.serial_number
    assert handshake(contexts[0], tls) == renewed  # what a new connection is shown


def handshake(server_context: ssl.SSLContext, tls: ServerTls) -> x509.Certificate:
    """A TLS handshake in memory; the certificate the server showed."""
    bios = [(ssl.MemoryBIO(), ssl.MemoryBIO()) for _ in range(2)]  # (incoming, outgoing)
    client = tls.creds.client_context().wrap_bio(*bios[0],
                                                 server_hostname=tls.creds.server_name)
    server = server_context.wrap_bio(*bios[1], server_side=True)
    for _ in range(10):
        for side, mine, theirs in ((client, bios[0], bios[1]), (server, bios[1], bios[0])):
            try:
                side.do_handshake()
            except ssl.SSLWantReadError:
                pass
            theirs[0].write(mine[1].read())
    der = client.getpeercert(binary_form=True)
    assert der is not None
    return x509.load_der_x509_certificate(der)


def test_a_server_follows_the_roots_forward_and_remembers_them(tmp_path: Path) -> None:
    """Its certificate from the active generation, followed by the cross-signed one;
    every trusted root in ca.pem; a pruned root dropped from new Raft contexts; an
    older state (a log replayed after a restart) not followed back."""
    tls = ServerTls(tmp_path, TOKEN, "s1", ["127.0.0.1"])
    transport = tls.raft()
    r0, r1 = ca.derive_root(TOKEN), ca.derive_root(TOKEN, 1)
    assert tls.adopt((1, (0, 1)))
    chain = x509.load_pem_x509_certificates(tls.creds.cert_file.read_bytes())
    assert ca.verify_server(chain[0], r1, datetime.datetime.now(datetime.UTC)) == "s1"
    assert chain[1:] == [ca.cross_sign(r1, r0)]
    assert tls.creds.ca_file.read_bytes() == r0.pem + r1.pem
    assert handshake(transport.server, tls) == chain[0]  # loaded into the Raft context
    before = transport.server
    assert tls.adopt((1, (1,)))  # generation 0 pruned: contexts made again
    assert transport.server is not before and tls.creds.ca_file.read_bytes() == r1.pem
    assert not tls.adopt((0, (0,)))  # behind: not followed
    again = ServerTls(tmp_path, TOKEN, "s1", ["127.0.0.1"])  # a restart
    assert (again.generation, again.trusted) == (1, (1,))
    assert x509.load_pem_x509_certificates(again.creds.cert_file.read_bytes()) == chain


def test_a_client_context_is_made_again_when_the_bundle_changes(tmp_path: Path) -> None:
    import os

    from meshlet.api.client import client_tls
    bundle = tmp_path / "ca.pem"
    bundle.write_bytes(ca.derive_root(TOKEN).pem)
    first = client_tls(bundle)
    assert client_tls(bundle) is first  # kept while the file is the same
    bundle.write_bytes(ca.derive_root(TOKEN).pem + ca.derive_root(TOKEN, 1).pem)
    os.utime(bundle, ns=(1, 1))  # a rewrite, whatever the clock's resolution
    again = client_tls(bundle)
    assert again is not first and len(again.get_ca_certs()) == 2

"""A workload's identity against a real server, as the agent keeps it: the key made
on the agent's side (0600, never sent), a leaf naming the workload's service, the
trust bundle, all in a private directory; issued again at once when the root is
rotated, with the same key; refused without ``service`` write, leaving no files.
And ``due``, the pure decision, across a certificate's life."""

from __future__ import annotations

import asyncio
import datetime
import stat
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from cryptography import x509

from meshlet.agent.identity import WorkloadIdentity, due
from meshlet.agent.roots_watch import RootsWatch
from meshlet.api.client import Client
from meshlet.security import ca, identity
from meshlet.server.main import Server
from tests.conftest import async_wait_until

NOW = datetime.datetime(2026, 12, 2, 12, 0, tzinfo=datetime.UTC)


@pytest.fixture
async def agent_client(server: Server) -> AsyncIterator[Client]:
    """A client with an agent's rights on service ``web`` only."""
    async with Client(server.url, token=server.acl.token()) as admin:
        await admin.policy_create("web-agent", [{"kind": "service", "prefix": "web",
                                                 "access": "write"}])
        secret = (await admin.token_create(["web-agent"]))["secret"]
    async with Client(server.url, token=secret) as client:
        yield client


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


async def test_a_workload_gets_its_files_and_a_leaf_naming_its_service(
        server: Server, agent_client: Client, tmp_path: Path) -> None:
    roots = RootsWatch(agent_client)
    roots.start()
    directory = tmp_path / "workloads" / "web-0" / "identity"
    ident = WorkloadIdentity(agent_client, roots, "web", directory)
    task = asyncio.get_running_loop().create_task(ident.run())
    try:
        await asyncio.wait_for(ident.ready.wait(), 20)
        assert mode(directory) == 0o700
        assert {p.name for p in directory.iterdir()} == {"key.pem", "cert.pem", "roots.pem"}
        for path in directory.iterdir():
            assert mode(path) == 0o600, path
        chain = identity.load_chain(ident.cert_file.read_bytes())
        bundle = identity.load_chain(ident.roots_file.read_bytes())
        sid = identity.verify_workload(chain, bundle, datetime.datetime.now(datetime.UTC))
        assert str(sid) == f"spiffe://{server.node.machine.ca.cluster}.meshlet/ns/default/svc/web"
        key = ident.key_file.read_bytes()
        assert chain[0].public_key() == ident.key().public_key()
        assert b"PRIVATE" not in server.node.machine.snapshot()

        async with Client(server.url, token=server.acl.token()) as admin:
            await admin.ca_rotate()

        async def reissued() -> bool:
            return ident.issued == 2 and len(identity.load_chain(
                ident.roots_file.read_bytes())) == 2
        await async_wait_until(reissued, 20, "a certificate from the new root")
        chain = identity.load_chain(ident.cert_file.read_bytes())
        new_root = server.node.machine.ca.active()
        assert new_root is not None and new_root.generation == 1
        old_root = ca.derive_root(server.api.ca_token or "").cert
        now = datetime.datetime.now(datetime.UTC)
        assert identity.verify_workload(chain, [old_root], now) == sid  # cross-signed
        assert identity.verify_workload(
            chain[:1], [x509.load_pem_x509_certificate(new_root.cert.encode())], now) == sid
        assert ident.key_file.read_bytes() == key  # the same key, a new certificate
        assert not due(chain[0], roots.current, now).renew
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await roots.stop()


async def test_without_service_write_nothing_is_written(
        server: Server, agent_client: Client, tmp_path: Path) -> None:
    roots = RootsWatch(agent_client)
    ident = WorkloadIdentity(agent_client, roots, "db", tmp_path / "db-0")
    task = asyncio.get_running_loop().create_task(ident.run())
    try:
        async def refused() -> bool:
            return ident.failures >= 2  # retried, with backoff
        await async_wait_until(refused, 20, "two refused requests for a certificate")
        assert not ident.ready.is_set() and ident.issued == 0
        assert not ident.cert_file.exists() and not ident.roots_file.exists()
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


def test_due_over_a_certificates_life() -> None:
    r0, r1 = ca.derive_root("x" * 43), ca.derive_root("x" * 43, 1)
    csr = identity.load_csr(identity_csr())
    leaf = identity.issue_workload(r0, csr, identity.workload_id(r0.cluster, "web"), NOW)
    roots0 = {"roots": [{"generation": 0, "active": True, "cert": r0.pem.decode()}]}
    roots1 = {"roots": [{"generation": 0, "active": False, "cert": r0.pem.decode()},
                        {"generation": 1, "active": True, "cert": r1.pem.decode()}]}
    assert due(None, None, NOW).renew
    fresh = due(leaf, roots0, NOW)
    half = identity.WORKLOAD_LIFETIME / 2
    assert not fresh.renew and fresh.wait == 3600.0  # looks again within the hour
    later = due(leaf, roots0, NOW + half - datetime.timedelta(minutes=10))
    assert not later.renew and 0 < later.wait <= 600
    assert due(leaf, roots0, NOW + half).renew
    assert due(leaf, None, NOW + half).renew  # without the bundle yet
    rotated = due(leaf, roots1, NOW)
    assert rotated.renew and "generation 1" in rotated.reason
    assert due(leaf, roots0, NOW - datetime.timedelta(hours=1)).renew  # clock went back


def identity_csr() -> str:
    from cryptography.hazmat.primitives import hashes, serialization
    return (x509.CertificateSigningRequestBuilder().subject_name(x509.Name([]))
            .sign(ca.new_key(), hashes.SHA256())
            .public_bytes(serialization.Encoding.PEM).decode())

"""The CA API on a real server: a CSR answered with a leaf that verifies against the
trust bundle and names the service asked for; refusals (no service write, a bad CSR)
change nothing; a rotation adds a second root, the active one, whose leaves verify
against the old root too (the cross-signed chain); and a cluster of three servers in
mutual TLS goes on committing across a rotation and the old root's pruning, each
server's own certificate issued again from the new root, one restarted and one
joining afterwards."""

from __future__ import annotations

import asyncio
import datetime
import socket
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from meshlet.api.client import Client
from meshlet.errors import ConfigError, Forbidden, Unauthenticated
from meshlet.security import ca, identity
from meshlet.server.main import Server, ServerOptions
from meshlet.server.tls import prune_roots
from meshlet.state.ca import CaRootPrune
from tests.conftest import async_management_token, async_wait_until

TOKEN = "ca-api-join-token-0123456789abcdef"


def csr_pem(key: ec.EllipticCurvePrivateKey | None = None,
            asks: str = "spiffe://evil/ns/default/svc/db") -> str:
    key = key or ca.new_key()
    return (x509.CertificateSigningRequestBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "x")]))
            .add_extension(x509.SubjectAlternativeName(
                [x509.UniformResourceIdentifier(asks)]), critical=False)
            .sign(key, hashes.SHA256()).public_bytes(serialization.Encoding.PEM).decode())


def now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


def verified(answer: dict, roots: str) -> str:  # type: ignore[type-arg]
    chain = identity.load_chain(answer["cert"] + "".join(answer["chain"]))
    return str(identity.verify_workload(chain, identity.load_chain(roots), now()))


async def test_sign_returns_a_leaf_for_the_service_asked(server: Server) -> None:
    async with Client(server.url, token=server.acl.token()) as client:
        roots, _ = await client.ca_roots()
        assert roots["active_generation"] == 0 and len(roots["roots"]) == 1
        assert roots["trust_domain"].endswith(".meshlet")
        key = ca.new_key()
        answer = await client.ca_sign(csr_pem(key), "web")
        sid = f"spiffe://{roots['trust_domain']}/ns/default/svc/web"
        assert answer["spiffe_id"] == sid and answer["chain"] == []
        assert verified(answer, roots["bundle"]) == sid
        leaf = x509.load_pem_x509_certificate(answer["cert"].encode())
        assert leaf.public_key() == key.public_key()
        sans = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        assert [str(u) for u in sans.get_values_for_type(x509.UniformResourceIdentifier)] \
            == [sid]
        shop = await client.ca_sign(csr_pem(), "api", "shop")
        assert shop["spiffe_id"].endswith("/ns/shop/svc/api")


async def test_refusals_say_why_and_change_nothing(server: Server) -> None:
    async with Client(server.url, token=server.acl.token()) as admin:
        await admin.policy_create("web-read", [{"kind": "service", "prefix": "web",
                                                "access": "read"}])
        await admin.policy_create("api-write", [{"kind": "service", "prefix": "api",
                                                 "access": "write"}])
        reader = (await admin.token_create(["web-read"]))["secret"]
        writer = (await admin.token_create(["api-write"]))["secret"]
        index = server.node.machine.index
        async with Client(server.url, token=reader) as client:
            with pytest.raises(Forbidden):
                await client.ca_sign(csr_pem(), "web")
            with pytest.raises(Forbidden):
                await client.ca_rotate()
            roots, _ = await client.ca_roots()  # any known token reads the bundle
            assert roots["roots"]
        async with Client(server.url, token=writer) as client:
            with pytest.raises(Forbidden):
                await client.ca_sign(csr_pem(), "web")
            assert (await client.ca_sign(csr_pem(), "api"))["spiffe_id"].endswith("/api")
        async with Client(server.url) as client:
            with pytest.raises(Unauthenticated):
                await client.ca_roots()
        p384 = ec.generate_private_key(ec.SECP384R1())
        for csr, service, match in [("junk", "web", "csr"), (csr_pem(p384), "web", "P-256"),
                                    (csr_pem(), "Web_1", "service"),
                                    ("x" * 5000, "web", "csr")]:
            with pytest.raises(ConfigError, match=match):
                await admin.ca_sign(csr, service)
        assert server.node.machine.index == index


async def test_rotate_adds_the_active_root_and_keeps_the_old_trusted(server: Server) -> None:
    async with Client(server.url, token=server.acl.token()) as client:
        before = await client.ca_sign(csr_pem(), "web")
        roots, index = await client.ca_roots()
        waiting = asyncio.ensure_future(client.ca_roots(index, wait=20))
        rotated = await client.ca_rotate()
        assert rotated["active_generation"] == 1
        after, _ = await waiting  # a blocking query wakes on the rotation
        assert [(r["generation"], r["active"]) for r in after["roots"]] == \
            [(0, False), (1, True)]
        assert after["roots"][1]["rotated_at"] and after["roots"][1]["cross_signed"]
        assert after["roots"][0]["fingerprint"] != after["roots"][1]["fingerprint"]
        new = await client.ca_sign(csr_pem(), "web")
        assert new["generation"] == 1 and len(new["chain"]) == 1
        assert verified(new, after["bundle"]) == new["spiffe_id"]
        assert verified(new, roots["bundle"]) == new["spiffe_id"]  # the old root alone
        assert verified(before, after["bundle"]) == before["spiffe_id"]  # still trusted
        assert (await client.ca_rotate())["active_generation"] == 2
    ca_pem = server.node.data_dir / "ca.pem"
    assert not ca_pem.exists() or "PRIVATE" not in ca_pem.read_text()
    assert b"PRIVATE KEY" not in server.node.machine.snapshot()


async def test_the_leader_prunes_a_root_whose_leaves_have_all_expired(
        server: Server) -> None:
    async with Client(server.url, token=server.acl.token()) as client:
        await client.ca_rotate()
    assert server.node.machine.ca.generations() == (1, (0, 1))
    # As the leader does once the longest leaf lifetime has passed since the rotation.
    task = asyncio.get_running_loop().create_task(prune_roots(
        server.node, interval=0.05, longest_leaf=datetime.timedelta(0)))
    try:
        async def pruned() -> bool:
            return server.node.machine.ca.generations() == (1, (1,))
        await async_wait_until(pruned, 10, "the old root pruned")
        async with Client(server.url, token=server.acl.token()) as client:
            roots, _ = await client.ca_roots()
            assert [r["generation"] for r in roots["roots"]] == [1]
            answer = await client.ca_sign(csr_pem(), "web")
        assert verified(answer, roots["bundle"]) == answer["spiffe_id"]
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def test_a_cluster_of_three_keeps_committing_across_a_rotation(tmp_path: Path) -> None:
    raft = {f"s{i}": ("127.0.0.1", free_port()) for i in range(1, 4)}
    servers: list[Server] = []
    try:
        first = await Server.start(tmp_path / "s1", "127.0.0.1", 0, ServerOptions(
            server_id="s1", raft=raft["s1"], join_token=TOKEN, https=True))
        servers.append(first)
        for sid in ("s2", "s3"):
            servers.append(await Server.start(tmp_path / sid, "127.0.0.1", 0, ServerOptions(
                server_id=sid, raft=raft[sid], join=[first.url], join_token=TOKEN,
                https=True)))

        async def joined() -> bool:
            return all(len(s.node.driver.members) == 3 and s.node.machine.ca.root
                       for s in servers)
        await async_wait_until(joined, 30, "three servers in one cluster")
        token = await async_management_token(tmp_path / "s1")
        ca_file = tmp_path / "s1" / "ca.pem"
        async with Client(first.url, token=token, ca_file=ca_file) as client:
            await client.kv_put("before", b"1")
            await client.ca_rotate()

            async def adopted() -> bool:
                return all(s.node.machine.ca.generations() == (1, (0, 1)) for s in servers)
            await async_wait_until(adopted, 20, "every server to apply the rotation")
            for n in range(5):
                await client.kv_put(f"after/{n}", b"x")

        def issued_by_new(server: Server) -> bool:
            pem = (server.node.data_dir / "tls" / "server.pem").read_bytes()
            leaf = x509.load_pem_x509_certificates(pem)[0]
            return leaf.issuer == ca.derive_root(TOKEN, 1).cert.subject and \
                leaf.extensions.get_extension_for_class(
                    x509.AuthorityKeyIdentifier).value.key_identifier == \
                x509.SubjectKeyIdentifier.from_public_key(
                    ca.derive_root(TOKEN, 1).cert.public_key()).digest

        async def reissued() -> bool:
            return all(issued_by_new(s) for s in servers)
        await async_wait_until(reissued, 20, "every server's certificate from the new root")
        # The old root pruned, only the new one is trusted: the servers' Raft
        # contexts are made again, and writes go on.
        leader = next(s for s in servers if s.node.is_leader)
        await leader.node.propose(CaRootPrune(0))

        async def pruned() -> bool:
            return all(s.node.machine.ca.generations() == (1, (1,)) and
                       (s.node.data_dir / "ca.pem").read_bytes() ==
                       ca.derive_root(TOKEN, 1).pem for s in servers)
        await async_wait_until(pruned, 20, "every server to drop the old root")
        async with Client(first.url, token=token, ca_file=ca_file) as client:
            await client.kv_put("after/prune", b"p")
        # A server restarted now makes every connection to and from it afresh, with
        # the new certificates; it catches up on what was written while it was down.
        last = servers.pop()
        await last.stop()
        async with Client(first.url, token=token, ca_file=ca_file) as client:
            await client.kv_put("while/down", b"z")
        servers.append(await Server.start(tmp_path / "s3", "127.0.0.1", 0, ServerOptions(
            server_id="s3", raft=raft["s3"], join=[first.url], join_token=TOKEN,
            https=True)))
        again = servers[-1]

        async def caught_up() -> bool:
            return "while/down" in again.node.machine.kv and issued_by_new(again)
        await async_wait_until(caught_up, 30, "the restarted server to catch up")
        bundle = tmp_path / "s3" / "ca.pem"
        assert bundle.read_bytes() == ca.derive_root(TOKEN, 1).pem
        assert issued_by_new(again)
        async with Client(again.url, token=token, ca_file=bundle) as client:
            await client.kv_put("after/restart", b"y")  # forwarded to the leader
            assert await client.kv_get_raw("after/restart", consistency="consistent") \
                == b"y"
        # A fourth server, joining with nothing but the token: it checks the cluster's
        # HTTPS through the cross-signed chain, and is told the root to issue from.
        raft["s4"] = ("127.0.0.1", free_port())
        servers.append(await Server.start(tmp_path / "s4", "127.0.0.1", 0, ServerOptions(
            server_id="s4", raft=raft["s4"], join=[first.url], join_token=TOKEN,
            https=True)))
        fourth = servers[-1]

        async def joined_too() -> bool:
            return "after/restart" in fourth.node.machine.kv
        await async_wait_until(joined_too, 30, "a server joining after the prune")
        assert issued_by_new(fourth)
        assert all(s.node.driver.transport.dropped["bad_certificate"] == 0 for s in servers)
    finally:
        for s in reversed(servers):
            await s.stop()

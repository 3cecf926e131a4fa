"""Access control's pure parts: the authorizer's decisions, and the ACL commands of the
state machine (checks that change nothing, one bootstrap only, snapshots)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from meshlet.errors import ConfigError, Conflict, NotFound
from meshlet.security.acl import Authorizer, Policy, Rule, Token, hash_secret
from meshlet.state import COMMANDS, StateMachine
from meshlet.state.commands import (
    AclBootstrap,
    AclPolicyDelete,
    AclPolicySet,
    AclTokenCreate,
    AclTokenDelete,
)

A1, A2, A3 = "a" * 32, "b" * 32, "c" * 32


def policy(*rules: tuple[str, str, str], name: str = "p") -> Policy:
    return Policy(name, tuple(Rule(*r) for r in rules))


def test_default_deny_and_write_implies_read() -> None:
    auth = Authorizer([policy(("kv", "app/", "write"), ("service", "", "read"))])
    assert auth.allows("kv", "app/x", "write") and auth.allows("kv", "app/x", "read")
    assert not auth.allows("kv", "other", "read")
    assert auth.allows("service", "web", "read") and not auth.allows("service", "web",
                                                                     "write")
    assert not auth.allows("container", "c", "read")  # no rule for the kind: denied
    assert not Authorizer([]).allows("kv", "", "read")


def test_the_longest_prefix_decides_and_deny_beats_at_the_same_prefix() -> None:
    auth = Authorizer([policy(("kv", "", "write"), ("kv", "secret/", "deny"),
                              ("kv", "secret/public/", "read"))])
    assert auth.allows("kv", "app", "write")
    assert not auth.allows("kv", "secret/key", "read")
    assert auth.allows("kv", "secret/public/x", "read")
    assert not auth.allows("kv", "secret/public/x", "write")
    two = Authorizer([policy(("kv", "a/", "write"), name="p1"),
                      policy(("kv", "a/", "deny"), name="p2"),
                      policy(("kv", "b/", "read"), ("kv", "b/", "write"), name="p3")])
    assert not two.allows("kv", "a/x", "read")
    assert two.allows("kv", "b/x", "write")


def test_management_may_do_everything() -> None:
    auth = Authorizer([], management=True)
    assert all(auth.allows(kind, "anything", "write")
               for kind in ("kv", "acl", "operator", "container"))


def test_policies_and_rules_are_validated_with_the_field_named() -> None:
    with pytest.raises(ConfigError) as caught:
        Policy.from_dict({"name": "p", "rules": [{"kind": "disk", "access": "read"}]})
    assert caught.value.field == "rules[0].kind"
    with pytest.raises(ConfigError) as caught:
        Policy.from_dict({"name": "p", "rules": [{"kind": "kv", "access": "all"}]})
    assert caught.value.field == "rules[0].access"
    with pytest.raises(ConfigError, match="name"):
        Policy.from_dict({"name": "bad name", "rules": []})
    with pytest.raises(ConfigError, match="printable"):
        Policy.from_dict({"name": "p", "rules": [{"kind": "kv", "prefix": "a\r\n",
                                                   "access": "read"}]})
    assert Policy.from_dict({"name": "p", "rules": [{"kind": "kv", "access": "read"}]}
                            ).rules == (Rule("kv", "", "read"),)


def apply(sm: StateMachine, command: object) -> object:
    result = sm.apply(sm.index + 1, command)  # type: ignore[arg-type]
    if result.error is not None:
        raise result.error
    return result.value


def test_only_one_bootstrap_is_ever_accepted() -> None:
    sm = StateMachine()
    apply(sm, AclBootstrap(A1, hash_secret("s1")))
    before = sm.acl.dump()
    result = sm.apply(sm.index + 1, AclBootstrap(A2, hash_secret("s2")))
    assert isinstance(result.error, Conflict)
    assert sm.acl.dump() == before
    assert sm.acl.resolve(hash_secret("s1")) is not None
    assert sm.acl.resolve(hash_secret("s2")) is None
    copy = StateMachine()  # a server restored from a snapshot refuses it too
    copy.restore(sm.snapshot())
    assert isinstance(copy.apply(copy.index + 1, AclBootstrap(A3, hash_secret("s3"))).error,
                      Conflict)


def test_tokens_name_existing_policies_and_grant_their_rules() -> None:
    sm = StateMachine()
    with pytest.raises(NotFound, match="no policy named 'web'"):
        apply(sm, AclTokenCreate(A1, hash_secret("t"), policies=("web",)))
    with pytest.raises(ConfigError, match="at least one policy"):
        apply(sm, AclTokenCreate(A1, hash_secret("t")))
    apply(sm, AclPolicySet("web", ({"kind": "kv", "prefix": "web/", "access": "write"},)))
    apply(sm, AclTokenCreate(A1, hash_secret("t"), "for web", ("web",)))
    token = sm.acl.resolve(hash_secret("t"))
    assert token is not None and token.accessor == A1
    auth = sm.acl.authorizer(token)
    assert auth.allows("kv", "web/a", "write") and not auth.allows("kv", "db/a", "read")
    with pytest.raises(Conflict, match="exists"):
        apply(sm, AclTokenCreate(A1, hash_secret("other"), policies=("web",)))
    with pytest.raises(Conflict, match="used by 1 token"):
        apply(sm, AclPolicyDelete("web"))
    # A policy replaced changes what its tokens may do.
    apply(sm, AclPolicySet("web", ({"kind": "kv", "prefix": "web/", "access": "read"},)))
    assert not sm.acl.authorizer(token).allows("kv", "web/a", "write")
    apply(sm, AclTokenDelete(A1))
    assert sm.acl.resolve(hash_secret("t")) is None
    apply(sm, AclPolicyDelete("web"))
    assert sm.acl.policies == {}


def test_a_node_identity_acts_for_its_node_only() -> None:
    """An agent's token: its node, and what is placed there; no other node."""
    auth = Authorizer([policy(("service", "", "write"))], nodes=("n1",))
    assert auth.allows("node", "n1", "write") and auth.allows("node", "n1", "read")
    assert not auth.allows("node", "n2", "write") and not auth.allows("node", "n2", "read")
    assert auth.acts_for("n1") and not auth.acts_for("n2") and not auth.acts_for(None)
    assert not auth.allows("container", "c", "read")  # only as placed on n1 (the API)
    assert Authorizer([], management=True).acts_for("any")
    assert not Authorizer([]).acts_for("n1")


def test_a_token_may_carry_node_identities_instead_of_policies() -> None:
    sm = StateMachine()
    apply(sm, AclTokenCreate(A1, hash_secret("agent"), "n1's agent",
                             node_identities=("n1",)))
    token = sm.acl.resolve(hash_secret("agent"))
    assert token is not None and token.to_dict()["node_identities"] == ["n1"]
    assert sm.acl.authorizer(token).allows("node", "n1", "write")
    for bad, message in ((("n1", "n1"), "named twice"), (("bad name",), "not a name"),
                         (tuple(f"n{i}" for i in range(17)), "at most 16")):
        with pytest.raises(ConfigError, match=message):
            apply(sm, AclTokenCreate(A2, hash_secret("x"), node_identities=bad))
    assert list(sm.acl.tokens) == [A1]
    # A snapshot keeps them; an older one without the field loads with none.
    again = StateMachine()
    again.restore(sm.snapshot())
    assert again.acl.tokens[A1].node_identities == ("n1",)
    old = Token.from_dict({"accessor": A2, "secret_hash": hash_secret("o"),
                           "policies": ["p"]})
    assert old.node_identities == ()


def test_the_last_management_token_cannot_be_deleted() -> None:
    sm = StateMachine()
    apply(sm, AclBootstrap(A1, hash_secret("m")))
    with pytest.raises(Conflict, match="last management token"):
        apply(sm, AclTokenDelete(A1))
    apply(sm, AclTokenCreate(A2, hash_secret("m2"), management=True))
    apply(sm, AclTokenDelete(A1))
    assert list(sm.acl.tokens) == [A2]


def test_a_refused_command_changes_no_acl_state() -> None:
    sm = StateMachine()
    apply(sm, AclBootstrap(A1, hash_secret("m")))
    before = sm.acl.dump()
    for bad in [AclTokenCreate("nothex", hash_secret("x"), management=True),
                AclTokenCreate(A2, "short", management=True),
                AclTokenCreate(A3, hash_secret("m"), management=True),  # the same secret
                AclPolicySet("p", ({"kind": "kv", "access": "maybe"},)),
                AclTokenDelete(A3), AclPolicyDelete("none")]:
        assert sm.apply(sm.index + 1, bad).error is not None, bad
    assert sm.acl.dump() == before


def test_the_state_keeps_hashes_and_snapshots_carry_acl_tables() -> None:
    sm = StateMachine()
    apply(sm, AclBootstrap(A1, hash_secret("the-secret")))
    apply(sm, AclPolicySet("ops", ({"kind": "operator", "prefix": "", "access": "read"},),
                           "operators"))
    apply(sm, AclTokenCreate(A2, hash_secret("ops-secret"), "ops", ("ops",)))
    data = sm.snapshot()
    assert b"the-secret" not in data and b"ops-secret" not in data
    copy = StateMachine()
    copy.restore(data)
    assert copy.snapshot() == data
    assert copy.acl.bootstrapped
    token = copy.acl.resolve(hash_secret("ops-secret"))
    assert token == Token(A2, hash_secret("ops-secret"), "ops", ("ops",), False)
    assert copy.acl.authorizer(token).allows("operator", "", "read")
    assert "secret_hash" not in token.to_dict()


def test_acl_commands_travel_through_the_log_encoding() -> None:
    for command in [AclBootstrap(A1, hash_secret("s")),
                    AclTokenCreate(A2, hash_secret("t"), "d", ("p",), False),
                    AclTokenDelete(A2),
                    AclPolicySet("p", ({"kind": "kv", "prefix": "", "access": "read"},), "x"),
                    AclPolicyDelete("p")]:
        assert COMMANDS.decode(COMMANDS.encode(command)) == command


RULES = st.builds(Rule, st.sampled_from(["kv", "service"]),
                  st.text(alphabet="ab/", max_size=3), st.sampled_from(["read", "write", "deny"]))


def reference(rules: list[Rule], kind: str, name: str, access: str) -> bool:
    """The rules as docs/api.md states them, evaluated the slow way."""
    matching = [r for r in rules if r.kind == kind and name.startswith(r.prefix)]
    if not matching:
        return False
    longest = max(len(r.prefix) for r in matching)
    granted = {r.access for r in matching if len(r.prefix) == longest}
    if "deny" in granted:
        return False
    return "write" in granted or access == "read"


@given(st.lists(st.lists(RULES, max_size=4), max_size=3),
       st.sampled_from(["kv", "service"]), st.text(alphabet="ab/", max_size=4),
       st.sampled_from(["read", "write"]))
def test_the_authorizer_decides_as_the_rules_are_documented(
        policies: list[list[Rule]], kind: str, name: str, access: str) -> None:
    auth = Authorizer([Policy(f"p{i}", tuple(rules)) for i, rules in enumerate(policies)])
    flat = [r for rules in policies for r in rules]
    assert auth.allows(kind, name, access) == reference(flat, kind, name, access)
    if auth.allows(kind, name, access):
        assert auth.allows_some(kind, access)


def test_a_secret_that_is_not_utf8_hashes_and_joins_nothing() -> None:
    """aiohttp gives a header's bytes that are not UTF-8 as lone surrogates: such a
    secret is one no token has (a 401), not an encoding error (a 500)."""
    from types import SimpleNamespace

    from meshlet.api.access import JOIN_TOKEN_HEADER, Guard
    from meshlet.state.acl import AclTable
    sent = b"\xff\xfe".decode("utf-8", "surrogateescape")
    assert hash_secret(sent) != hash_secret("")
    table = AclTable()
    guard = Guard(lambda: table, join_token="j" * 32)
    assert guard.resolve(sent)[0] is None
    assert not guard.joins(SimpleNamespace(headers={JOIN_TOKEN_HEADER: sent}))  # type: ignore[arg-type]

"""The ACL table: tokens and policies, replicated like everything else.

Tokens are kept by accessor and found by their secret's hash (the state never holds a
secret). The first management token is made by ``AclBootstrap``, which is refused
once there has been one, so however many servers race to bootstrap, one wins. Deleting
the last management token is refused, so a cluster cannot lock itself out; deleting a
policy that a token still names is refused, so a token's rights never change under it
by accident. Pure.
"""

from __future__ import annotations

from typing import Any

from meshlet.errors import ConfigError, Conflict, NotFound
from meshlet.security.acl import DENY_ALL, Authorizer, Policy, Token, token_fields
from meshlet.state.commands import (
    AclBootstrap,
    AclPolicyDelete,
    AclPolicySet,
    AclTokenCreate,
    AclTokenDelete,
)

MAX_TOKENS = 10_000
MAX_POLICIES = 1_000


class AclTable:
    def __init__(self) -> None:
        self.tokens: dict[str, Token] = {}
        self.by_hash: dict[str, Token] = {}
        self.policies: dict[str, Policy] = {}
        self.bootstrapped = False
        self.index = 0

    def __repr__(self) -> str:
        return (f"<AclTable tokens={len(self.tokens)} policies={len(self.policies)} "
                f"bootstrapped={self.bootstrapped} index={self.index}>")

    # -- queries ----------------------------------------------------------------------

    def resolve(self, secret_hash: str) -> Token | None:
        return self.by_hash.get(secret_hash)

    def authorizer(self, token: Token | None) -> Authorizer:
        """What ``token`` may do (nothing, for None); a policy it names that is gone
        grants nothing."""
        if token is None:
            return DENY_ALL
        return Authorizer((self.policies[p] for p in token.policies if p in self.policies),
                          token.management, token.node_identities)

    def get_token(self, accessor: str) -> Token:
        token = self.tokens.get(accessor)
        if token is None:
            raise NotFound(f"no token with accessor {accessor!r}", "accessor")
        return token

    def get_policy(self, name: str) -> Policy:
        policy = self.policies.get(name)
        if policy is None:
            raise NotFound(f"no policy named {name!r}", "name")
        return policy

    # -- checks: raise the error apply would return -------------------------------------

    def check_bootstrap(self, cmd: AclBootstrap) -> None:
        if self.bootstrapped:
            raise Conflict("ACLs are already bootstrapped: the cluster has had its "
                           "management token", "acl")
        self._check_new(cmd.accessor, cmd.secret_hash)

    def check_token_create(self, cmd: AclTokenCreate) -> None:
        self._check_new(cmd.accessor, cmd.secret_hash)
        if not isinstance(cmd.policies, tuple):
            raise ConfigError("policies: expected a list of policy names", "policies")
        if not isinstance(cmd.node_identities, tuple):
            raise ConfigError("node_identities: expected a list of node names",
                              "node_identities")
        token_fields({"description": cmd.description, "policies": list(cmd.policies),
                      "management": cmd.management,
                      "node_identities": list(cmd.node_identities)})
        if not cmd.management and not cmd.policies and not cmd.node_identities:
            raise ConfigError("policies: a token needs at least one policy or node "
                              "identity (or management: true)", "policies")
        for name in cmd.policies:
            if name not in self.policies:
                raise NotFound(f"policies: no policy named {name!r}", "policies")

    def _check_new(self, accessor: str, secret_hash: str) -> None:
        Token.from_dict({"accessor": accessor, "secret_hash": secret_hash})
        if accessor in self.tokens or secret_hash in self.by_hash:
            raise Conflict(f"a token with accessor {accessor!r} (or that secret) exists",
                           "accessor")
        if len(self.tokens) >= MAX_TOKENS:
            raise ConfigError(f"tokens: at most {MAX_TOKENS}", "accessor")

    def check_token_delete(self, cmd: AclTokenDelete) -> None:
        token = self.get_token(cmd.accessor)
        if token.management and sum(t.management for t in self.tokens.values()) == 1:
            raise Conflict("this is the last management token: create another before "
                           "deleting it", "accessor")

    def check_policy_set(self, cmd: AclPolicySet) -> None:
        self._policy_of(cmd)
        if cmd.name not in self.policies and len(self.policies) >= MAX_POLICIES:
            raise ConfigError(f"policies: at most {MAX_POLICIES}", "name")

    def check_policy_delete(self, cmd: AclPolicyDelete) -> None:
        self.get_policy(cmd.name)
        users = sorted(t.accessor for t in self.tokens.values() if cmd.name in t.policies)
        if users:
            raise Conflict(f"policy {cmd.name!r} is used by {len(users)} token(s) "
                           f"({', '.join(users[:3])}); delete them first", "name")

    @staticmethod
    def _policy_of(cmd: AclPolicySet) -> Policy:
        if not isinstance(cmd.rules, tuple):
            raise ConfigError("rules: expected a list of rules", "rules")
        return Policy.from_dict({"name": cmd.name, "rules": list(cmd.rules),
                                 "description": cmd.description})

    # -- apply --------------------------------------------------------------------------

    def bootstrap(self, index: int, cmd: AclBootstrap) -> dict[str, Any]:
        self.bootstrapped = True
        return self._add(index, Token(cmd.accessor, cmd.secret_hash,
                                      "initial management token", (), True))

    def token_create(self, index: int, cmd: AclTokenCreate) -> dict[str, Any]:
        return self._add(index, Token(cmd.accessor, cmd.secret_hash, cmd.description,
                                      cmd.policies, cmd.management, cmd.node_identities))

    def _add(self, index: int, token: Token) -> dict[str, Any]:
        self.tokens[token.accessor] = token
        self.by_hash[token.secret_hash] = token
        self.index = index
        return token.to_dict()

    def token_delete(self, index: int, cmd: AclTokenDelete) -> None:
        token = self.tokens.pop(cmd.accessor)
        del self.by_hash[token.secret_hash]
        self.index = index

    def policy_set(self, index: int, cmd: AclPolicySet) -> dict[str, Any]:
        policy = self._policy_of(cmd)
        self.policies[policy.name] = policy
        self.index = index
        return policy.to_dict()

    def policy_delete(self, index: int, cmd: AclPolicyDelete) -> None:
        del self.policies[cmd.name]
        self.index = index

    # -- snapshots ------------------------------------------------------------------------

    def dump(self) -> dict[str, Any]:
        return {"index": self.index, "bootstrapped": self.bootstrapped,
                "tokens": [self.tokens[k].to_state() for k in sorted(self.tokens)],
                "policies": [self.policies[k].to_dict() for k in sorted(self.policies)]}

    def load(self, body: dict[str, Any] | None) -> None:
        body = body or {"index": 0, "bootstrapped": False, "tokens": [], "policies": []}
        self.index = body["index"]
        self.bootstrapped = body["bootstrapped"]
        self.tokens = {d["accessor"]: Token.from_dict(d) for d in body["tokens"]}
        self.by_hash = {t.secret_hash: t for t in self.tokens.values()}
        self.policies = {d["name"]: Policy.from_dict(d) for d in body["policies"]}

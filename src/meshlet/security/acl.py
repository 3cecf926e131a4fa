"""Access control, as Consul's ACLs: policies of rules, tokens that name policies, and
the one decision every API request waits on.

A rule grants ``read`` or ``write`` (or ``deny``) on the names of one resource kind that
start with a prefix. For a given kind and name the rule with the longest matching prefix
decides; among rules of the same prefix (from several policies) deny beats write, and
write beats read. Write implies read. No matching rule: denied (default deny). A
management token may do everything.

A token may also carry node identities, as Consul's do: a token with the identity of
node N may write node N (register and deregister it) and act for N on what the state
places there (report its containers). That is what an agent's token needs, and no more:
unlike ``container`` write, it cannot make a container run anywhere.

Pure: no I/O, no clock. Secrets never reach this module's state: a token holds the
SHA-256 of its secret (``hash_secret``), so the replicated state cannot leak them.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from meshlet.errors import ConfigError

KINDS = ("kv", "service", "config", "network", "container", "node", "acl", "operator",
         "deployment")
ACCESS = ("read", "write", "deny")
STRENGTH = {"read": 1, "write": 2, "deny": 3}  # which rule wins at the same prefix
MAX_RULES = 256
MAX_POLICIES = 64
MAX_NAME = 128
MAX_PREFIX = 512
MAX_DESCRIPTION = 512
MAX_NODE_IDENTITIES = 16
NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")
ACCESSOR = re.compile(r"[0-9a-f]{32}")


def hash_secret(secret: str) -> str:
    """What the state keeps of a token's secret. A header that is not UTF-8 arrives
    with lone surrogates: it hashes (to what no token has) rather than raising."""
    return hashlib.sha256(secret.encode("utf-8", "surrogatepass")).hexdigest()


def check_name(value: object, field: str) -> str:
    if not isinstance(value, str) or not NAME.fullmatch(value) or len(value) > MAX_NAME:
        raise ConfigError(f"{field}: {value!r} is not a name (letters, digits, '_', '.', "
                          f"'-', at most {MAX_NAME})", field)
    return value


def check_text(value: object, field: str, limit: int) -> str:
    if not isinstance(value, str) or len(value) > limit or any(
            ord(c) < 32 or ord(c) == 127 for c in value):
        raise ConfigError(f"{field}: expected text of at most {limit} printable "
                          "characters", field)
    return value


@dataclass(frozen=True)
class Rule:
    kind: str
    prefix: str
    access: str

    @classmethod
    def from_dict(cls, raw: object, field: str) -> Rule:
        """Raises ConfigError naming the field."""
        if not isinstance(raw, Mapping):
            raise ConfigError(f"{field}: expected an object with kind, prefix, access",
                              field)
        unknown = set(raw) - {"kind", "prefix", "access"}
        if unknown:
            raise ConfigError(f"{field}: unknown field {sorted(unknown)[0]!r}", field)
        kind, access = raw.get("kind"), raw.get("access")
        if kind not in KINDS:
            raise ConfigError(f"{field}.kind: {kind!r} is not one of {', '.join(KINDS)}",
                              f"{field}.kind")
        if access not in ACCESS:
            raise ConfigError(f"{field}.access: {access!r} is not read, write or deny",
                              f"{field}.access")
        prefix = check_text(raw.get("prefix", ""), f"{field}.prefix", MAX_PREFIX)
        return cls(str(kind), prefix, str(access))

    def to_dict(self) -> dict[str, str]:
        return {"kind": self.kind, "prefix": self.prefix, "access": self.access}


@dataclass(frozen=True)
class Policy:
    name: str
    rules: tuple[Rule, ...]
    description: str = ""

    @classmethod
    def from_dict(cls, raw: object) -> Policy:
        """A policy from its API (and snapshot) form; raises ConfigError."""
        if not isinstance(raw, Mapping):
            raise ConfigError("body: expected an object with name and rules", "body")
        unknown = set(raw) - {"name", "rules", "description"}
        if unknown:
            raise ConfigError(f"{sorted(unknown)[0]}: unknown field", sorted(unknown)[0])
        rules = raw.get("rules", [])
        if not isinstance(rules, list) or len(rules) > MAX_RULES:
            raise ConfigError(f"rules: expected a list of at most {MAX_RULES} rules",
                              "rules")
        return cls(check_name(raw.get("name"), "name"),
                   tuple(Rule.from_dict(r, f"rules[{i}]") for i, r in enumerate(rules)),
                   check_text(raw.get("description", ""), "description", MAX_DESCRIPTION))

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "description": self.description,
                "rules": [r.to_dict() for r in self.rules]}


@dataclass(frozen=True)
class Token:
    """A token as the state keeps it: its public ``accessor`` and its secret's hash."""

    accessor: str
    secret_hash: str
    description: str = ""
    policies: tuple[str, ...] = ()
    management: bool = False
    node_identities: tuple[str, ...] = ()

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any]) -> Token:
        """From the snapshot form (which has the hash); raises ConfigError."""
        accessor = raw.get("accessor")
        secret_hash = raw.get("secret_hash")
        if not isinstance(accessor, str) or not ACCESSOR.fullmatch(accessor):
            raise ConfigError(f"accessor: {accessor!r} is not 32 hex digits", "accessor")
        if not isinstance(secret_hash, str) or not re.fullmatch(r"[0-9a-f]{64}",
                                                                secret_hash):
            raise ConfigError("secret_hash: not a SHA-256 in hex", "secret_hash")
        return cls(accessor, secret_hash, **token_fields(raw))

    def to_dict(self) -> dict[str, Any]:
        """The public form: never the secret, nor its hash."""
        return {"accessor": self.accessor, "description": self.description,
                "policies": list(self.policies), "management": self.management,
                "node_identities": list(self.node_identities)}

    def to_state(self) -> dict[str, Any]:
        return {**self.to_dict(), "secret_hash": self.secret_hash}


def token_fields(raw: Mapping[str, Any]) -> dict[str, Any]:
    """The fields a client may choose for a token: description, policies, management,
    node_identities; raises ConfigError."""
    policies = raw.get("policies", [])
    if not isinstance(policies, list) or len(policies) > MAX_POLICIES:
        raise ConfigError(f"policies: expected a list of at most {MAX_POLICIES} policy "
                          "names", "policies")
    management = raw.get("management", False)
    if not isinstance(management, bool):
        raise ConfigError("management: expected true or false", "management")
    names = tuple(check_name(p, f"policies[{i}]") for i, p in enumerate(policies))
    if len(set(names)) != len(names):
        raise ConfigError("policies: a policy is named twice", "policies")
    nodes = raw.get("node_identities", [])
    if not isinstance(nodes, list) or len(nodes) > MAX_NODE_IDENTITIES:
        raise ConfigError(f"node_identities: expected a list of at most "
                          f"{MAX_NODE_IDENTITIES} node names", "node_identities")
    identities = tuple(check_name(n, f"node_identities[{i}]") for i, n in enumerate(nodes))
    if len(set(identities)) != len(identities):
        raise ConfigError("node_identities: a node is named twice", "node_identities")
    return {"description": check_text(raw.get("description", ""), "description",
                                      MAX_DESCRIPTION),
            "policies": names, "management": management, "node_identities": identities}


class Authorizer:
    """What one token may do, compiled from its policies once."""

    def __init__(self, policies: Iterable[Policy], management: bool = False,
                 nodes: Iterable[str] = ()) -> None:
        self.management = management
        self.nodes = frozenset(nodes)  # the node identities: what it may act for
        best: dict[tuple[str, str], str] = {}
        for policy in policies:
            for rule in policy.rules:
                key = (rule.kind, rule.prefix)
                if STRENGTH[rule.access] > STRENGTH.get(best.get(key, ""), 0):
                    best[key] = rule.access
        # Per kind, longest prefix first, so the first match is the one that decides.
        self.rules: dict[str, list[tuple[str, str]]] = {}
        for (kind, prefix), access in best.items():
            self.rules.setdefault(kind, []).append((prefix, access))
        for found in self.rules.values():
            found.sort(key=lambda rule: len(rule[0]), reverse=True)

    def __repr__(self) -> str:
        if self.management:
            return "<Authorizer management>"
        count = sum(len(r) for r in self.rules.values())
        nodes = f", acting for {', '.join(sorted(self.nodes))}" if self.nodes else ""
        return (f"<Authorizer {count} rules over "
                f"{', '.join(sorted(self.rules)) or 'nothing'}{nodes}>")

    def acts_for(self, node: str | None) -> bool:
        """May this token act for ``node`` (its node identity, or management)?"""
        return self.management or (node is not None and node in self.nodes)

    def allows(self, kind: str, name: str, access: str) -> bool:
        """May this token ``access`` (read or write) the ``kind`` resource ``name``?"""
        if self.management or (kind == "node" and name in self.nodes):
            return True
        for prefix, granted in self.rules.get(kind, ()):
            if name.startswith(prefix):
                return granted == "write" or (granted == "read" and access == "read")
        return False

    def allows_some(self, kind: str, access: str) -> bool:
        """May this token ``access`` any ``kind`` resource at all? (A route that names
        its resource in its body refuses early when not, before reading it.)"""
        return self.management or any(
            granted == "write" or (granted == "read" and access == "read")
            for _, granted in self.rules.get(kind, ()))


DENY_ALL = Authorizer(())
MANAGEMENT = Authorizer((), management=True)

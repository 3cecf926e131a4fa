"""Intentions, as Consul's: who may call whom. Pure: no I/O; shared by the control
plane (which stores and checks them) and the sidecar (which enforces them).

An intention names a source and a destination service (either may be ``*``) and
either an ``action`` (``allow`` or ``deny``: L4, the whole connection) or, for HTTP,
``permissions``: an ordered list of an action and a match on path (exact or prefix),
methods and headers, the first that matches deciding (L7). For a caller and a
destination the intention of highest precedence that names them decides: an exact
destination outranks a wildcard one, then an exact source a wildcard one; at equal
precedence deny beats allow. No intention, or an L7 one none of whose permissions
matches: the default policy (``allow`` or ``deny``, chosen when the cluster is founded).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

WILDCARD = "*"
ACTIONS = ("allow", "deny")
SERVICE = re.compile(r"[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?")
HEADER_NAME = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]{1,256}")
METHODS = ("GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "TRACE")
MAX_PERMISSIONS = 64
MAX_HEADERS = 16
MAX_TEXT = 1024
MAX_DESCRIPTION = 512
INTENTION_KEYS = frozenset({"source", "destination", "action", "permissions", "description"})
PERMISSION_KEYS = frozenset({"action", "http"})
HTTP_KEYS = frozenset({"path_exact", "path_prefix", "methods", "headers"})
HEADER_KEYS = frozenset({"name", "present", "exact", "prefix", "invert"})


class IntentionError(ValueError):
    """A malformed intention; ``field`` names the part."""

    def __init__(self, message: str, field: str) -> None:
        super().__init__(message)
        self.field = field


def _text(value: object, field: str, limit: int = MAX_TEXT, printable: bool = True) -> str:
    if not isinstance(value, str) or len(value) > limit or (printable and any(
            ord(c) < 32 or ord(c) == 127 for c in value)):
        raise IntentionError(f"{field}: expected text of at most {limit} printable "
                             "characters", field)
    return value


def _service(value: object, field: str) -> str:
    if value == WILDCARD:
        return WILDCARD
    if not isinstance(value, str) or not SERVICE.fullmatch(value):
        raise IntentionError(f"{field}: {str(value)[:80]!r} is not a service name (lower "
                             "case letters, digits and '-') or '*'", field)
    return value


def _keys(raw: object, allowed: frozenset[str], field: str) -> Mapping[str, Any]:
    if not isinstance(raw, Mapping):
        raise IntentionError(f"{field}: expected an object", field)
    unknown = sorted(set(raw) - allowed)
    if unknown:
        raise IntentionError(f"{field}.{unknown[0]}: unknown field", f"{field}.{unknown[0]}")
    return raw


@dataclass(frozen=True)
class HeaderMatch:
    """A header that must be present, equal or start with a value (``invert``: not)."""

    name: str
    present: bool = False
    exact: str | None = None
    prefix: str | None = None
    invert: bool = False

    @classmethod
    def from_dict(cls, raw: object, field: str) -> HeaderMatch:
        d = _keys(raw, HEADER_KEYS, field)
        name = d.get("name")
        if not isinstance(name, str) or not HEADER_NAME.fullmatch(name):
            raise IntentionError(f"{field}.name: expected a header name", f"{field}.name")
        kinds = [k for k in ("present", "exact", "prefix") if d.get(k) not in (None, False)]
        if len(kinds) != 1:
            raise IntentionError(f"{field}: expected exactly one of present, exact, "
                                 "prefix", field)
        for flag in ("present", "invert"):
            if not isinstance(d.get(flag, False), bool):
                raise IntentionError(f"{field}.{flag}: expected true or false",
                                     f"{field}.{flag}")
        exact = d.get("exact")
        prefix = d.get("prefix")
        return cls(name.lower(), bool(d.get("present", False)),
                   None if exact is None else _text(exact, f"{field}.exact"),
                   None if prefix is None else _text(prefix, f"{field}.prefix"),
                   bool(d.get("invert", False)))

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"name": self.name}
        if self.present:
            d["present"] = True
        if self.exact is not None:
            d["exact"] = self.exact
        if self.prefix is not None:
            d["prefix"] = self.prefix
        if self.invert:
            d["invert"] = True
        return d

    def matches(self, headers: Mapping[str, str]) -> bool:
        value = headers.get(self.name)
        if self.present:
            found = value is not None
        elif self.exact is not None:
            found = value == self.exact
        else:
            found = value is not None and value.startswith(self.prefix or "")
        return found != self.invert


@dataclass(frozen=True)
class HttpMatch:
    path_exact: str | None = None
    path_prefix: str | None = None
    methods: tuple[str, ...] = ()
    headers: tuple[HeaderMatch, ...] = ()

    @classmethod
    def from_dict(cls, raw: object, field: str) -> HttpMatch:
        d = _keys(raw, HTTP_KEYS, field)
        exact, prefix = d.get("path_exact"), d.get("path_prefix")
        if exact is not None and prefix is not None:
            raise IntentionError(f"{field}: path_exact or path_prefix, not both", field)
        for key, value in (("path_exact", exact), ("path_prefix", prefix)):
            if value is not None and not _text(value, f"{field}.{key}").startswith("/"):
                raise IntentionError(f"{field}.{key}: a path starts with '/'",
                                     f"{field}.{key}")
        methods = d.get("methods", [])
        if not isinstance(methods, list) or any(m not in METHODS for m in methods):
            raise IntentionError(f"{field}.methods: expected a list of "
                                 f"{', '.join(METHODS)}", f"{field}.methods")
        headers = d.get("headers", [])
        if not isinstance(headers, list) or len(headers) > MAX_HEADERS:
            raise IntentionError(f"{field}.headers: expected a list of at most "
                                 f"{MAX_HEADERS} header matches", f"{field}.headers")
        return cls(exact, prefix, tuple(dict.fromkeys(methods)),
                   tuple(HeaderMatch.from_dict(h, f"{field}.headers[{i}]")
                         for i, h in enumerate(headers)))

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {}
        if self.path_exact is not None:
            d["path_exact"] = self.path_exact
        if self.path_prefix is not None:
            d["path_prefix"] = self.path_prefix
        if self.methods:
            d["methods"] = list(self.methods)
        if self.headers:
            d["headers"] = [h.to_dict() for h in self.headers]
        return d

    def matches(self, method: str, path: str, headers: Mapping[str, str]) -> bool:
        if self.path_exact is not None and path != self.path_exact:
            return False
        if self.path_prefix is not None and not path.startswith(self.path_prefix):
            return False
        if self.methods and method not in self.methods:
            return False
        return all(h.matches(headers) for h in self.headers)


@dataclass(frozen=True)
class Permission:
    action: str
    http: HttpMatch

    @classmethod
    def from_dict(cls, raw: object, field: str) -> Permission:
        d = _keys(raw, PERMISSION_KEYS, field)
        action = d.get("action")
        if action not in ACTIONS:
            raise IntentionError(f"{field}.action: expected allow or deny", f"{field}.action")
        return cls(str(action), HttpMatch.from_dict(d.get("http", {}), f"{field}.http"))

    def to_dict(self) -> dict[str, Any]:
        return {"action": self.action, "http": self.http.to_dict()}


@dataclass(frozen=True)
class Intention:
    source: str
    destination: str
    action: str = ""  # allow or deny (L4); "" with permissions (L7)
    permissions: tuple[Permission, ...] = ()
    description: str = ""

    @classmethod
    def from_dict(cls, raw: object) -> Intention:
        """Raises IntentionError naming the field."""
        d = _keys(raw, INTENTION_KEYS, "intention")
        source = _service(d.get("source"), "source")
        destination = _service(d.get("destination"), "destination")
        action = d.get("action", "")
        permissions = d.get("permissions", [])
        if not isinstance(permissions, list) or len(permissions) > MAX_PERMISSIONS:
            raise IntentionError(f"permissions: expected a list of at most "
                                 f"{MAX_PERMISSIONS}", "permissions")
        if (action in ACTIONS) == bool(permissions):
            raise IntentionError("action: expected allow or deny, or permissions (HTTP), "
                                 "one of the two", "action")
        return cls(source, destination, str(action),
                   tuple(Permission.from_dict(p, f"permissions[{i}]")
                         for i, p in enumerate(permissions)),
                   _text(d.get("description", ""), "description", MAX_DESCRIPTION))

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"source": self.source, "destination": self.destination,
                             "description": self.description,
                             "precedence": precedence(self)}
        if self.permissions:
            d["permissions"] = [p.to_dict() for p in self.permissions]
        else:
            d["action"] = self.action
        return d

    @property
    def key(self) -> tuple[str, str]:
        return (self.source, self.destination)

    def names(self, source: str, destination: str) -> bool:
        return (self.source in (WILDCARD, source)
                and self.destination in (WILDCARD, destination))


def precedence(intention: Intention) -> int:
    """Consul's order: exact destination first, then exact source (4 down to 1)."""
    return ((2 if intention.destination != WILDCARD else 0)
            + (1 if intention.source != WILDCARD else 0) + 1)


def ranked(intentions: Sequence[Intention]) -> list[Intention]:
    """Highest precedence first; at equal precedence deny before allow (an L7
    intention with the allows: its permissions decide)."""
    return sorted(intentions, key=lambda i: (-precedence(i), i.action != "deny",
                                             i.source, i.destination))


UNRESERVED = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~")
ESCAPE = re.compile(r"%([0-9A-Fa-f]{2})")


def normalize_path(path: str) -> str:
    """The path an app would see, for matching (as Envoy's ``normalize_path`` and
    ``merge_slashes`` do for RBAC): escapes of unreserved characters decoded (``%61``
    is ``a``), other escapes upper-cased, repeated slashes merged and ``.`` and ``..``
    segments resolved, so ``//x/../%61dmin`` cannot slip past a rule on ``/admin``."""
    decoded = ESCAPE.sub(lambda m: chr(int(m[1], 16)) if chr(int(m[1], 16)) in UNRESERVED
                         else m[0].upper(), path)
    segments: list[str] = []
    for segment in decoded.split("/"):
        if segment in ("", "."):
            continue
        if segment == "..":
            if segments:
                segments.pop()
            continue
        segments.append(segment)
    trailing = "/" if decoded.endswith(("/", "/.", "/..")) and segments else ""
    return "/" + "/".join(segments) + trailing


@dataclass(frozen=True)
class Decision:
    allowed: bool
    why: str  # what decided: the intention, the permission, or the default


class Intentions:
    """The intentions one destination enforces (those naming it, or ``*``), ranked,
    and the default policy."""

    def __init__(self, destination: str, intentions: Sequence[Intention],
                 default: str = "allow") -> None:
        self.destination = destination
        self.default = default
        self.rules = ranked([i for i in intentions if i.destination in (WILDCARD,
                                                                        destination)])
        self.l7 = any(i.permissions for i in self.rules)

    def __repr__(self) -> str:
        return f"<Intentions for {self.destination}: {len(self.rules)}, default {self.default}>"

    def top(self, source: str) -> Intention | None:
        """The intention that decides for ``source`` ("" for a caller without an
        identity, which only a ``*`` source names)."""
        for intention in self.rules:
            if intention.names(source, self.destination) if source else \
                    intention.source == WILDCARD:
                return intention
        return None

    def decide(self, source: str, method: str = "", path: str = "",
               headers: Mapping[str, str] | None = None) -> Decision:
        """Whether ``source`` may make this request (``method``, ``path``, ``headers``
        lower-cased names; ignored by L4 intentions)."""
        intention = self.top(source)
        if intention is None:
            return Decision(self.default == "allow", f"default {self.default}")
        label = f"{intention.source} => {intention.destination}"
        if not intention.permissions:
            return Decision(intention.action == "allow", f"{label} {intention.action}")
        path = normalize_path(path)
        for n, permission in enumerate(intention.permissions):
            if permission.http.matches(method, path, headers or {}):
                return Decision(permission.action == "allow",
                                f"{label} permission {n} {permission.action}")
        return Decision(self.default == "allow", f"{label}: no permission matched, "
                                                  f"default {self.default}")

"""The cluster's CA in the replicated state: its roots' certificates, public material
only. The founding root (generation 0) is recorded once, by the first leader;
``ca_root_rotate`` adds generation N+1 as the active root, with its certificate
cross-signed by generation N, and ``ca_root_prune`` drops an old one from the trust
bundle. No key is stored: every generation's key is derived from the join token on
every server (``security/ca.py``), so a snapshot or a log file holds nothing that
issues certificates. Pure: times arrive in the commands, as the leader's clock read
them.

Every root in the list is trusted (the bundle agents write as ``roots.pem`` and
servers as ``ca.pem``); only the active one issues. An old root stays until the leader
prunes it, once the longest leaf lifetime has passed since it stopped issuing
(``prunable``): by then every leaf it issued has expired or been issued again.
"""

from __future__ import annotations

import datetime
from dataclasses import dataclass
from typing import Any, ClassVar

from cryptography import x509

from meshlet.errors import ConfigError, Conflict, NotFound
from meshlet.security.ca import signed_by

MAX_PEM = 8192
MAX_ROOTS = 8  # trusted at once; a rotation beyond waits for the leader to prune


@dataclass(frozen=True)
class CaRootSet:
    """Record the cluster's root certificate (PEM). Recording the same one again
    changes nothing; another one is refused."""

    TYPE: ClassVar[str] = "ca_root_set"
    cluster: str
    cert: str


@dataclass(frozen=True)
class CaRootRotate:
    """Make ``generation`` (the active one's next) the active root: its self-signed
    ``cert`` and ``cross_signed`` (its subject and key, issued by the active root), both
    PEM; ``rotated_at``: ISO 8601, when the leader proposed it."""

    TYPE: ClassVar[str] = "ca_root_rotate"
    generation: int
    cert: str
    cross_signed: str
    rotated_at: str


@dataclass(frozen=True)
class CaRootPrune:
    """Drop root ``generation`` (not the active one) from the trust bundle."""

    TYPE: ClassVar[str] = "ca_root_prune"
    generation: int


@dataclass(frozen=True)
class RootEntry:
    """One root: ``rotated_at`` is when it became active ('' for the founding one)."""

    generation: int
    cert: str
    cross_signed: str = ""
    active: bool = False
    rotated_at: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {"generation": self.generation, "cert": self.cert,
                "cross_signed": self.cross_signed, "active": self.active,
                "rotated_at": self.rotated_at}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> RootEntry:
        return cls(d["generation"], d["cert"], d.get("cross_signed", ""),
                   d.get("active", False), d.get("rotated_at", ""))


def _ca_cert(pem: object, field: str) -> x509.Certificate:
    if not isinstance(pem, str) or len(pem) > MAX_PEM:
        raise ConfigError(f"{field}: expected a PEM certificate", field)
    try:
        cert = x509.load_pem_x509_certificate(pem.encode())
        constraints = cert.extensions.get_extension_for_class(x509.BasicConstraints)
    except (ValueError, x509.ExtensionNotFound, UnicodeEncodeError):
        raise ConfigError(f"{field}: not a CA certificate in PEM form", field) from None
    if not constraints.value.ca:
        raise ConfigError(f"{field}: not a CA certificate", field)
    return cert


def parse_time(text: str, field: str) -> datetime.datetime:
    try:
        at = datetime.datetime.fromisoformat(text)
    except (TypeError, ValueError):
        raise ConfigError(f"{field}: {str(text)[:40]!r} is not an ISO 8601 time",
                          field) from None
    if at.tzinfo is None:
        raise ConfigError(f"{field}: the time needs its offset from UTC", field)
    return at


class CaTable:
    def __init__(self) -> None:
        self.cluster = ""
        self.root = ""   # generation 0's PEM, or "" before the founding leader records it
        self.roots: list[RootEntry] = []  # by generation
        self.index = 0

    def __repr__(self) -> str:
        active = self.active()
        return (f"<CaTable {self.cluster or 'no root'} roots={len(self.roots)} "
                f"active={active.generation if active else None} index={self.index}>")

    def active(self) -> RootEntry | None:
        return next((r for r in self.roots if r.active), None)

    def generations(self) -> tuple[int, tuple[int, ...]]:
        """The active generation and every trusted one ((0, (0,)) before the founding
        root is recorded: what every server starts with)."""
        active = self.active()
        if active is None:
            return 0, (0,)
        return active.generation, tuple(r.generation for r in self.roots)

    def bundle(self) -> str:
        """Every trusted root's certificate, oldest first: the trust bundle."""
        return "".join(r.cert for r in self.roots)

    def prunable(self, now: datetime.datetime, longest_leaf: datetime.timedelta
                 ) -> list[int]:
        """The roots no leaf can still need at ``now``: inactive, and the root after
        them became active more than ``longest_leaf`` ago."""
        out = []
        for older, newer in zip(self.roots, self.roots[1:], strict=False):
            if not older.active and newer.rotated_at and \
                    parse_time(newer.rotated_at, "rotated_at") + longest_leaf <= now:
                out.append(older.generation)
        return out

    def check_set(self, cmd: CaRootSet) -> None:
        if not isinstance(cmd.cluster, str) or not cmd.cluster.isalnum() \
                or len(cmd.cluster) > 63:
            raise ConfigError(f"cluster: {cmd.cluster!r} is not a cluster name", "cluster")
        _ca_cert(cmd.cert, "cert")
        if self.root and (self.root, self.cluster) != (cmd.cert, cmd.cluster):
            raise Conflict("this cluster's CA root is recorded already; it is another one")

    def set(self, index: int, cmd: CaRootSet) -> dict[str, Any]:
        if not self.root:
            self.cluster, self.root, self.index = cmd.cluster, cmd.cert, index
            self.roots = [RootEntry(0, cmd.cert, active=True)]
        return self.dump()

    def check_rotate(self, cmd: CaRootRotate) -> None:
        active = self.active()
        if active is None:
            raise Conflict("the cluster's CA root is not recorded yet")
        if not isinstance(cmd.generation, int) or cmd.generation != active.generation + 1:
            raise Conflict(f"generation {cmd.generation!r} does not follow the active "
                           f"root's, {active.generation} (another rotation came first?)")
        if len(self.roots) >= MAX_ROOTS:
            raise Conflict(f"{len(self.roots)} roots are trusted already; a rotation "
                           "waits until the leader prunes the oldest (once every leaf "
                           "it issued has expired)")
        parse_time(cmd.rotated_at, "rotated_at")
        new = _ca_cert(cmd.cert, "cert")
        cross = _ca_cert(cmd.cross_signed, "cross_signed")
        old = x509.load_pem_x509_certificate(active.cert.encode())
        if not signed_by(new, new):
            raise ConfigError("cert: the new root is not self-signed", "cert")
        if new.subject != old.subject or cross.subject != old.subject:
            raise ConfigError("cert: a new root has the same subject as the active one",
                              "cert")
        if cross.public_key() != new.public_key():
            raise ConfigError("cross_signed: not for the new root's key", "cross_signed")
        if not signed_by(cross, old):
            raise ConfigError("cross_signed: not signed by the active root", "cross_signed")

    def rotate(self, index: int, cmd: CaRootRotate) -> dict[str, Any]:
        self.roots = [RootEntry(r.generation, r.cert, r.cross_signed, False, r.rotated_at)
                      for r in self.roots]
        self.roots.append(RootEntry(cmd.generation, cmd.cert, cmd.cross_signed, True,
                                    cmd.rotated_at))
        self.index = index
        return self.dump()

    def check_prune(self, cmd: CaRootPrune) -> None:
        found = next((r for r in self.roots if r.generation == cmd.generation), None)
        if found is None:
            raise NotFound(f"no CA root of generation {cmd.generation!r}", "generation")
        if found.active:
            raise Conflict(f"root generation {cmd.generation} is the active one")

    def prune(self, index: int, cmd: CaRootPrune) -> dict[str, Any]:
        self.roots = [r for r in self.roots if r.generation != cmd.generation]
        self.index = index
        return self.dump()

    def dump(self) -> dict[str, Any]:
        return {"cluster": self.cluster, "root": self.root, "index": self.index,
                "roots": [r.to_dict() for r in self.roots]}

    def load(self, body: dict[str, Any] | None) -> None:
        body = body or {"cluster": "", "root": "", "index": 0}
        self.cluster, self.root, self.index = body["cluster"], body["root"], body["index"]
        if "roots" in body:
            self.roots = [RootEntry.from_dict(r) for r in body["roots"]]
        else:  # a snapshot from before rotations: the founding root alone
            self.roots = [RootEntry(0, self.root, active=True)] if self.root else []

"""The cluster's CA in the replicated state: the root certificate every server and
client verifies against, recorded once, by the first leader, at the cluster's
founding. Its key is not stored: it is derived from the join token on every server
(``security/ca.py``), so a snapshot or a log file holds nothing that issues
certificates. Pure."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

from cryptography import x509

from meshlet.errors import ConfigError, Conflict

MAX_PEM = 8192


@dataclass(frozen=True)
class CaRootSet:
    """Record the cluster's root certificate (PEM). Recording the same one again
    changes nothing; another one is refused."""

    TYPE: ClassVar[str] = "ca_root_set"
    cluster: str
    cert: str


class CaTable:
    def __init__(self) -> None:
        self.cluster = ""
        self.root = ""   # PEM, or "" before the founding leader records it
        self.index = 0

    def __repr__(self) -> str:
        return f"<CaTable {self.cluster or 'no root'} index={self.index}>"

    def check_set(self, cmd: CaRootSet) -> None:
        if not isinstance(cmd.cluster, str) or not cmd.cluster.isalnum() \
                or len(cmd.cluster) > 63:
            raise ConfigError(f"cluster: {cmd.cluster!r} is not a cluster name", "cluster")
        if not isinstance(cmd.cert, str) or len(cmd.cert) > MAX_PEM:
            raise ConfigError("cert: expected a PEM certificate", "cert")
        try:
            cert = x509.load_pem_x509_certificate(cmd.cert.encode())
            constraints = cert.extensions.get_extension_for_class(x509.BasicConstraints)
        except (ValueError, x509.ExtensionNotFound):
            raise ConfigError("cert: not a CA certificate in PEM form", "cert") from None
        if not constraints.value.ca:
            raise ConfigError("cert: not a CA certificate", "cert")
        if self.root and (self.root, self.cluster) != (cmd.cert, cmd.cluster):
            raise Conflict("this cluster's CA root is recorded already; it is another one")

    def set(self, index: int, cmd: CaRootSet) -> dict[str, Any]:
        if not self.root:
            self.cluster, self.root, self.index = cmd.cluster, cmd.cert, index
        return self.dump()

    def dump(self) -> dict[str, Any]:
        return {"cluster": self.cluster, "root": self.root, "index": self.index}

    def load(self, body: dict[str, Any] | None) -> None:
        body = body or {"cluster": "", "root": "", "index": 0}
        self.cluster, self.root, self.index = body["cluster"], body["root"], body["index"]

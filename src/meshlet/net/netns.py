"""Named network namespaces, as `ip netns` keeps them (/run/netns/NAME), so that
`ip netns exec NAME …` and `meshlet exec` work on them. meshlet's start with ``ml-``,
which is how cleanup after a crash finds them."""

from __future__ import annotations

import os
from pathlib import Path

from pyroute2 import NetNS, netns

from meshlet.errors import MeshletError

PREFIX = "ml-"
RESOLV_DIR = Path("/etc/netns")


def require_root(what: str) -> None:
    if os.geteuid() != 0:
        raise MeshletError(f"{what} needs root (network namespaces and links); without "
                           "it only host networking is available")


def create(name: str) -> None:
    """Create the namespace (loopback up); an existing one is reused."""
    if name not in netns.listnetns():
        netns.create(name)
    with NetNS(name) as ns:
        ns.link("set", index=ns.link_lookup(ifname="lo")[0], state="up")


def remove(name: str) -> None:
    """Delete the namespace and its resolver directory; absent is fine."""
    if name in netns.listnetns():
        netns.remove(name)
    resolv = RESOLV_DIR / name / "resolv.conf"
    resolv.unlink(missing_ok=True)
    if resolv.parent.exists():
        resolv.parent.rmdir()


def ours() -> list[str]:
    return sorted(n for n in netns.listnetns() if n.startswith(PREFIX))

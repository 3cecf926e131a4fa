"""Pure: what this host knows of the cluster's networking, as its watches last found it
(every node's containers, the networks and who holds which address on them, the
nodes and their addresses, the services' virtual IPs), and what follows from it: the
names a sandbox resolves (``net/names.py``) and the remote entries of an overlay
(``net/overlay_plan.py``)."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any

from meshlet.net import names
from meshlet.net.dns import Lookup, Records
from meshlet.net.overlay_plan import Remote, remotes

Record = Mapping[str, Any]


class ClusterView:
    def __init__(self, node: str) -> None:
        self.node = node
        self.containers: dict[str, Record] = {}   # every node's, by name
        self.networks: dict[str, Record] = {}     # by name, as last fetched
        self.nodes: dict[str, str] = {}           # node -> address
        self.vips: dict[str, Record] = {}         # service -> {vip, ports}
        self.directory: dict[str, Record] = {}    # every workload by name, for DNS

    def __repr__(self) -> str:
        return (f"<ClusterView {self.node} containers={len(self.containers)} "
                f"networks={len(self.networks)} nodes={len(self.nodes)}>")

    def set_containers(self, found: Iterable[Record]) -> None:
        self.containers = {c["name"]: c for c in found}
        self.directory = names.directory(self.containers, self.networks.values())

    def set_networks(self, found: Iterable[Record]) -> None:
        self.networks = {n["name"]: n for n in found}
        self.directory = names.directory(self.containers, self.networks.values())

    def note_network(self, record: Record) -> None:
        """One network's record, fetched fresher than the last watch answer."""
        self.networks[record["name"]] = record

    def set_nodes(self, found: Iterable[Record]) -> None:
        self.nodes = {n["name"]: n["address"] for n in found}

    def set_vips(self, found: Iterable[Record]) -> None:
        self.vips = {v["service"]: v for v in found}

    def lookup(self, me: Callable[[], Record | None]) -> Lookup:
        """Names as the sandbox whose record ``me()`` gives sees them (none while it
        has no record)."""
        def resolve(name: str) -> Records | None:
            asker = me()
            return names.resolve(name, asker, self.directory, self.vips) if asker else None
        return resolve

    def overlays(self, local: Iterable[str]) -> dict[str, set[Remote]]:
        """For each overlay network among ``local``: the entries its tunnel must hold
        (the workloads on other registered hosts)."""
        return {n: remotes(self.networks[n]["addresses"], self.containers, self.nodes,
                           self.node)
                for n in sorted(local) if self.networks.get(n, {}).get("driver") == "overlay"}

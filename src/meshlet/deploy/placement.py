"""Where a new replica goes: spread across nodes, then zones, within capacity. Pure.

A node fits when what its pods' limits take plus the new one's stays within what it
offers (a node that says nothing of its capacity fits anything). Among those that fit,
the replica goes where its template (the Deployment's current revision) has the fewest
replicas, then to the zone with the fewest, then where the Deployment as a whole has
the fewest, then to the node with the fewest pods, then by name, so equal inputs give
equal answers on any leader. Counting the template first keeps a rolling update spread:
the new replicas spread as the old ones did, whatever the old ones' placement.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class NodeView:
    name: str
    zone: str = ""
    alive: bool = True
    cpu: float = 0.0      # what it offers pods; 0: not known
    memory: int = 0


@dataclass(frozen=True)
class Placed:
    """A pod as placement counts it: its node, its Deployment and its limits."""

    node: str
    owner: tuple[str, str]          # (namespace, deployment)
    cpu: float = 0.0
    memory: int = 0
    template: str = ""              # its template's hash


def fits(node: NodeView, placed: Sequence[Placed], cpu: float, memory: int) -> str | None:
    """None if a replica with these limits fits on ``node``, else what it lacks."""
    here = [p for p in placed if p.node == node.name]
    if node.cpu and sum(p.cpu for p in here) + cpu > node.cpu + 1e-9:
        return "Insufficient cpu"
    if node.memory and sum(p.memory for p in here) + memory > node.memory:
        return "Insufficient memory"
    return None


def choose_node(nodes: Sequence[NodeView], placed: Sequence[Placed], owner: tuple[str, str],
                cpu: float = 0.0, memory: int = 0, template: str = ""
                ) -> tuple[str | None, str]:
    """(the node for one more replica of ``owner``, "") or (None, why none fits), the
    reason worded as Kubernetes' scheduler words it."""
    alive = [n for n in nodes if n.alive]
    if not alive:
        return None, "0/0 nodes are available: no node has joined the cluster"
    lacking: Counter[str] = Counter()
    candidates = []
    for node in alive:
        missing = fits(node, placed, cpu, memory)
        if missing is None:
            candidates.append(node)
        else:
            lacking[missing] += 1
    if not candidates:
        reasons = ", ".join(f"{count} {why}" for why, count in sorted(lacking.items()))
        return None, f"0/{len(alive)} nodes are available: {reasons}"
    zone_of = {n.name: n.zone for n in alive}
    same = [p for p in placed if p.owner == owner and p.template == template]
    siblings = Counter(p.node for p in same)
    siblings_by_zone = Counter(zone_of.get(p.node, "") for p in same)
    mine = Counter(p.node for p in placed if p.owner == owner)
    mine_by_zone = Counter(zone_of.get(p.node, "") for p in placed if p.owner == owner)
    total = Counter(p.node for p in placed)
    best = min(candidates, key=lambda n: (siblings[n.name], siblings_by_zone[n.zone],
                                          mine[n.name], mine_by_zone[n.zone],
                                          total[n.name], n.name))
    return best.name, ""

"""Nodes whose agent stopped heartbeating are deregistered, so other hosts drop their
overlay entries for a host that crashed, not only for one that left cleanly.

Agents re-register their node every third of the TTL. The leader notes when it last
heard from each (in memory: heartbeats are forwarded to it), and proposes the
deregistration of a node silent for longer than the TTL. A new leader counts every
node as heard when it took over, so a leader change never reaps a live node.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING

from meshlet.errors import MeshletError
from meshlet.state.commands import NodeDeregister

if TYPE_CHECKING:
    from meshlet.server.raft_node import RaftServerNode

log = logging.getLogger(__name__)
DEFAULT_TTL = 30.0


def expired(nodes: Iterable[str], heard: Mapping[str, float], leading_since: float,
            now: float, ttl: float) -> list[str]:
    """The nodes not heard from for ``ttl`` seconds (pure)."""
    return sorted(n for n in nodes if now - max(heard.get(n, 0.0), leading_since) > ttl)


class NodeReaper:
    def __init__(self, node: RaftServerNode, ttl: float = DEFAULT_TTL) -> None:
        self.node = node
        self.ttl = ttl
        self.heard: dict[str, float] = {}
        self.leading_since: float | None = None
        self.task: asyncio.Task[None] | None = None

    def heard_from(self, name: str) -> None:
        self.heard[name] = time.monotonic()

    def start(self) -> None:
        self.task = asyncio.get_running_loop().create_task(self.run())

    async def run(self) -> None:
        while True:
            await asyncio.sleep(min(self.ttl / 4, 1.0))
            if not self.node.driver.is_leader:
                self.leading_since = None
                continue
            now = time.monotonic()
            if self.leading_since is None:
                self.leading_since = now
            for name in expired(self.node.machine.nodes.nodes, self.heard,
                                self.leading_since, now, self.ttl):
                log.warning("node %s sent no heartbeat for %.0fs; deregistering it",
                            name, self.ttl)
                try:
                    await self.node.propose(NodeDeregister(name))
                except MeshletError as exc:
                    log.info("could not deregister node %s: %s", name, exc)
                self.heard.pop(name, None)

    async def stop(self) -> None:
        if self.task is not None:
            self.task.cancel()
            await asyncio.gather(self.task, return_exceptions=True)

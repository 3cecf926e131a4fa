"""What the HTTP API needs of the server behind it, as Protocols.

The API layer only parses, proposes or reads, and renders; it never builds the server.
``server/main.py`` (the composition root) builds the Raft node and the node reaper and
hands them in, as etcd's ``etcdserver`` hands its ``raftNode`` to the API, so ``api/``
imports nothing from ``server/`` and a test can serve the API over any implementation.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

from meshlet.state import Command, Result, StateMachine


class ControlPlane(Protocol):
    """A server's replicated state and the one write path to it.

    Every method that needs the leader raises NotLeader on a follower (the API forwards
    those); reads are served from ``machine`` once ``read_barrier`` has returned."""

    @property
    def machine(self) -> StateMachine: ...

    @property
    def is_leader(self) -> bool: ...

    async def propose(self, command: Command) -> Result:
        """Commit ``command`` on a majority; raises MeshletError."""
        ...

    async def read_barrier(self, consistency: str, max_stale: float | None) -> None:
        """Make a read as fresh as ``consistency`` (stale, default, consistent) asks."""
        ...

    async def wait_for_change(self, current: Callable[[], int], min_index: int,
                              timeout: float) -> int:
        """A blocking query: return ``current()`` once it exceeds ``min_index``, or
        after ``timeout`` seconds."""
        ...

    def on_change(self, callback: Callable[[], None]) -> Callable[[], None]:
        """Call ``callback`` after each change to ``machine`` (an entry applied, a
        snapshot restored); returns what stops it."""
        ...

    def read_headers(self) -> dict[str, str]:
        """Headers that say how fresh this server's reads are."""
        ...

    def leader_url(self) -> str | None:
        """The leader's API URL when another server leads."""
        ...

    def status(self) -> dict[str, Any]: ...

    def self_info(self) -> dict[str, Any]:
        """This server's id and addresses, and whether it has a cluster yet."""
        ...

    async def transfer_leader(self, to: str | None) -> str: ...

    async def add_member(self, node_id: str, raft: tuple[str, int],
                         http: str) -> dict[str, Any]: ...

    async def remove_member(self, node_id: str) -> dict[str, Any]: ...


class Heartbeats(Protocol):
    """Where agents' node heartbeats are noted (the server's node reaper)."""

    ttl: float

    def heard_from(self, name: str) -> None: ...

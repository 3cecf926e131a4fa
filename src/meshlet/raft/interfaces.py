"""What the Raft driver needs from the world, as small Protocols: a ``Storage`` for
what must survive a crash and a ``Transport`` for messages. Production passes
``storage.RaftStorage`` (files, fsync) and ``transport.TcpTransport``; a simulation
passes the in-memory twins in ``memory``, so both run the same driver loop (as etcd's
``rafttest`` and hashicorp/raft's in-memory transport do).
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Protocol, TypeGuard, runtime_checkable

from meshlet.raft.core import Entry, HardState, Message, NodeId, Snapshot


class Storage(Protocol):
    """The hard state, the snapshot and the log after it. The driver calls it from the
    event loop only, except ``sync``."""

    def load(self) -> tuple[HardState, Snapshot | None, list[Entry]]:
        """What was persisted: the entries are those after the snapshot. Raises
        StorageError when it cannot be read."""
        ...

    def save(self, hard: HardState | None, entries: list[Entry], sync: bool = True) -> bool:
        """Persist ``entries`` (dropping any stored from the first one's index on) and
        ``hard``; durable on return, or, with ``sync`` False, once ``sync()`` has
        returned. Returns whether that ``sync()`` is still owed."""
        ...

    def changes_vote(self, hard: HardState) -> bool:
        """Whether ``hard`` changes the saved term or vote (durable before any reply)."""
        ...

    def sync(self) -> None:
        """Make everything saved so far durable. May run on another thread, while
        nothing else is saved."""
        ...

    def save_snapshot(self, snapshot: Snapshot, after: list[Entry]) -> None:
        """Persist ``snapshot`` and make the log the entries ``after`` it; durable on
        return, and a crash part way leaves the old state or the new one."""
        ...

    def close(self) -> None:
        ...


@runtime_checkable
class ForkableStorage(Storage, Protocol):
    """A storage that a forked child can write a snapshot into, because it lives in
    files. With any other (memory: the child's writes would die with it) the driver
    takes its snapshots on the event loop."""

    def write_snapshot(self, snapshot: Snapshot) -> None:
        """Replace the snapshot, atomically; called in the child."""
        ...

    def read_snapshot(self) -> Snapshot | None:
        ...

    def replace_log(self, snapshot: Snapshot, after: list[Entry]) -> None:
        """Once the child has written ``snapshot``: the log becomes ``after``."""
        ...

    def discard_snapshot_in_progress(self) -> None:
        """Remove what a killed child left half written."""
        ...


def forkable(storage: Storage) -> TypeGuard[ForkableStorage]:
    """Whether ``storage`` is a ``ForkableStorage``; judged once per class, since
    ``isinstance`` against a Protocol inspects every member each time."""
    return forkable_class(type(storage))


@functools.cache
def forkable_class(kind: type) -> bool:
    return issubclass(kind, ForkableStorage)


class Transport(Protocol):
    """Best effort: Raft tolerates messages lost, duplicated, reordered or late."""

    async def start(self, deliver: Callable[[Message], None]) -> None:
        """Begin taking messages; each one received is handed to ``deliver``."""
        ...

    def set_peers(self, peers: dict[NodeId, tuple[str, int]]) -> None:
        """The members' addresses, as the configuration in force gives them."""
        ...

    def send(self, m: Message) -> None:
        """Queue ``m`` for ``m.to``; never blocks, never raises."""
        ...

    async def stop(self) -> None:
        ...

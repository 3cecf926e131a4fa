"""In-memory twins of the driver's Storage and Transport, for simulation.

``MemoryStorage`` is a disk that never loses a write: each save is durable when it
returns, so the driver never owes it a ``sync`` (and starts no thread), and a crash,
which is dropping the driver and starting another over the same storage, loses
nothing the first one saved. It cannot be written from a forked child, so the driver
takes its snapshots on the loop.

``MemoryTransport`` hands each message sent to a ``MemoryNetwork``, which holds it
until its owner delivers it; the owner (a simulator) also decides which to drop,
duplicate, reorder or hold back. Peers are reached by id: the addresses the driver
derives from the configuration are only recorded. The owner may also watch each
message as it is sent (``on_send``), while the sender is still inside the call that
sent it: the one moment at which what the sender has stored is exactly what a crash
would keep.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from meshlet.raft.core import Entry, HardState, Message, NodeId, Snapshot

if TYPE_CHECKING:
    from meshlet.raft.interfaces import Storage, Transport


class MemoryStorage:
    def __init__(self) -> None:
        self.hard = HardState()
        self.snapshot: Snapshot | None = None
        self.log: list[Entry] = []  # the entries after the snapshot

    def __repr__(self) -> str:
        base = self.snapshot.index if self.snapshot is not None else 0
        return f"<MemoryStorage {self.hard} snapshot={base} last={base + len(self.log)}>"

    def load(self) -> tuple[HardState, Snapshot | None, list[Entry]]:
        return self.hard, self.snapshot, list(self.log)

    def save(self, hard: HardState | None, entries: list[Entry], sync: bool = True) -> bool:
        if entries:
            base = self.snapshot.index if self.snapshot is not None else 0
            start = entries[0].index - base - 1
            assert 0 <= start <= len(self.log), \
                f"entries from {entries[0].index} do not follow {base + len(self.log)}"
            del self.log[start:]
            self.log.extend(entries)
        if hard is not None:
            self.hard = hard
        return False  # durable already

    def changes_vote(self, hard: HardState) -> bool:
        return (hard.term, hard.vote) != (self.hard.term, self.hard.vote)

    def sync(self) -> None:
        pass

    def save_snapshot(self, snapshot: Snapshot, after: list[Entry]) -> None:
        self.snapshot = snapshot
        self.log = list(after)

    def close(self) -> None:
        pass


class MemoryNetwork:
    """Messages in flight, in the order sent, and who is attached to receive."""

    def __init__(self, on_send: Callable[[Message], None] | None = None) -> None:
        """``on_send`` sees each message once it is in flight, before its sender's
        ``send`` returns; what it raises comes out of that ``send`` (a simulator's
        way to stop the sender dead there, as a crash would)."""
        self.in_flight: list[Message] = []
        self.receivers: dict[NodeId, Callable[[Message], None]] = {}
        self.on_send = on_send

    def __repr__(self) -> str:
        return f"<MemoryNetwork in_flight={len(self.in_flight)} nodes={sorted(self.receivers)}>"

    def attach(self, node_id: NodeId, deliver: Callable[[Message], None]) -> None:
        self.receivers[node_id] = deliver

    def detach(self, node_id: NodeId) -> None:
        """Pull the plug: nothing more reaches ``node_id`` until it attaches again."""
        self.receivers.pop(node_id, None)

    def send(self, m: Message) -> None:
        self.in_flight.append(m)
        if self.on_send is not None:
            self.on_send(m)

    def deliver(self, m: Message) -> bool:
        """Hand ``m`` (taken out of ``in_flight``) to its receiver; False if there is
        none attached, and it is lost."""
        receiver = self.receivers.get(m.to)
        if receiver is None:
            return False
        receiver(m)
        return True


class MemoryTransport:
    def __init__(self, node_id: NodeId, network: MemoryNetwork) -> None:
        self.id = node_id
        self.network = network
        self.peers: dict[NodeId, tuple[str, int]] = {}

    def __repr__(self) -> str:
        return f"<MemoryTransport {self.id} peers={sorted(self.peers)}>"

    async def start(self, deliver: Callable[[Message], None]) -> None:
        self.network.attach(self.id, deliver)

    def set_peers(self, peers: dict[NodeId, tuple[str, int]]) -> None:
        self.peers = dict(peers)

    def send(self, m: Message) -> None:
        self.network.send(m)

    async def stop(self) -> None:
        self.network.detach(self.id)


if TYPE_CHECKING:  # mypy checks the twins against the driver's Protocols
    _twins: tuple[Storage, Transport] = (MemoryStorage(), MemoryTransport("", MemoryNetwork()))

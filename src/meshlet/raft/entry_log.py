"""The entries a Raft node holds after its snapshot, kept column by column.

Each entry's term and kind sit in flat arrays and its data as a bytes object, none of
which the cyclic garbage collector tracks. Held as ``Entry`` objects, a leader's log
of 100,000 entries between two snapshots made every full collection walk 100,000
more objects: pauses of up to 75 ms under load, each one a stall of every write.
``Entry`` objects are made only for the entries asked for, and live as long as the
caller keeps them. Pure: positions count from 0, the first entry after the snapshot.
"""

from __future__ import annotations

from array import array
from collections.abc import Iterable

from meshlet.raft.entry import Entry


class EntryLog:
    __slots__ = ("datas", "kinds", "terms")

    def __init__(self) -> None:
        self.terms = array("q")
        self.kinds = bytearray()
        self.datas: list[bytes] = []

    @classmethod
    def of(cls, entries: Iterable[Entry], after: int = 0) -> EntryLog:
        """A log of ``entries``, which must follow index ``after`` without a gap."""
        log = cls()
        for entry in entries:
            assert entry.index == after + 1 + len(log), "entries must follow one another"
            log.append(entry)
        return log

    def __len__(self) -> int:
        return len(self.datas)

    def __repr__(self) -> str:
        return f"<EntryLog {len(self)} entries>"

    def append(self, entry: Entry) -> None:
        self.terms.append(entry.term)
        self.kinds.append(entry.kind)
        self.datas.append(entry.data)

    def term(self, position: int) -> int:
        return self.terms[position]

    def data(self, position: int) -> bytes:
        return self.datas[position]

    def entries(self, start: int, end: int, offset: int) -> list[Entry]:
        """Entries at positions ``start <= p < end`` (clipped to the log), their indexes
        counted on from ``offset``, the index before position 0."""
        start, end = max(start, 0), min(end, len(self))
        terms, kinds, datas = self.terms, self.kinds, self.datas
        return [Entry(terms[p], offset + 1 + p, datas[p], kinds[p]) for p in range(start, end)]

    def last_of_kind(self, kind: int, end: int | None = None) -> int:
        """The position of the last entry of ``kind`` before position ``end`` (default:
        in the whole log); -1 if none. No entry is made to find it."""
        return self.kinds.rfind(bytes((kind,)), 0, len(self) if end is None else max(end, 0))

    def truncate(self, position: int) -> None:
        """Drop the entries from ``position`` on."""
        del self.terms[position:], self.kinds[position:], self.datas[position:]

    def drop_first(self, count: int) -> None:
        """Drop the first ``count`` entries (folded into a snapshot)."""
        del self.terms[:count], self.kinds[:count], self.datas[:count]

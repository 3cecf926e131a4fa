"""Durable Raft state: the snapshot, the hard state (term, vote, commit) and the log.

The snapshot is one file replaced atomically (``meshlet.raft.wal.SnapshotStore``: temp
file, fsync, rename, fsync of the directory, a CRC over it). Everything else is an
append-only record log (``meshlet.raft.wal``: a CRC per record, a torn tail
truncated, a corrupt middle refused) holding ``entry`` records, ``hard`` records (the
last one read wins) and ``truncate`` records that replay as "drop everything from
index N": written when a leader overwrote a conflicting suffix, and at the head of the
fresh segment that a snapshot starts, so a crash between writing the new segment and
deleting the old ones replays correctly. Entries and hard state of one Ready share
one write and one fsync; a change of the commit index alone is written without one
(a lost commit index is learnt again from the leader). ``save`` returns when durable,
so the core's obligation (persist before sending) holds when the driver calls it
first; a leader's driver may instead save without the fsync and call ``sync`` on
another thread, counting the entries as persisted only once that returns.
"""

from __future__ import annotations

import base64
import json
from pathlib import Path

from meshlet.errors import StorageError
from meshlet.private_files import private_dir
from meshlet.raft.core import Entry, HardState, Snapshot
from meshlet.raft.wal import CommandLog, LogRecord, SnapshotStore, fsync_dir


def encode_snapshot(snapshot: Snapshot) -> bytes:
    head = json.dumps({"index": snapshot.index, "term": snapshot.term,
                       "config": snapshot.config.decode()}, separators=(",", ":"))
    return head.encode() + b"\n" + snapshot.data


def decode_snapshot(raw: bytes) -> Snapshot:
    head, _, data = raw.partition(b"\n")
    try:
        meta = json.loads(head)
        return Snapshot(meta["index"], meta["term"], meta["config"].encode(), data)
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise StorageError(f"snapshot header is unreadable: {exc}") from None


class RaftStorage:
    def __init__(self, directory: Path) -> None:
        self.directory = private_dir(directory)
        self.hard = HardState()
        self.records = CommandLog(directory / "raft-log")
        self.snapshots = SnapshotStore(directory)
        self.last_index = 0

    def __repr__(self) -> str:
        return f"<RaftStorage {self.directory} last_index={self.last_index}>"

    def load(self) -> tuple[HardState, Snapshot | None, list[Entry]]:
        """What was persisted: the entries are those after the snapshot. Raises
        StorageError on corruption."""
        hard = HardState()
        raw = self.snapshots.load()
        snapshot = decode_snapshot(raw) if raw is not None else None
        base = snapshot.index if snapshot is not None else 0
        entries: list[Entry] = []
        for record in self.records.recover():
            cmd = record.command
            if cmd["op"] == "hard":
                hard = HardState(cmd["term"], cmd["vote"], cmd["commit"])
                continue
            if cmd["op"] == "truncate":
                del entries[max(cmd["from"] - base - 1, 0):]
                continue
            if cmd["index"] <= base:
                continue  # folded into the snapshot
            data = cmd["raw"] if "raw" in cmd else base64.b64decode(cmd["data"])
            entry = Entry(cmd["term"], cmd["index"], data, cmd.get("kind", 0))
            if entry.index != base + len(entries) + 1:
                raise StorageError(f"raft log in {self.directory}: entry {entry.index} "
                                   f"follows {base + len(entries)}")
            entries.append(entry)
        self.last_index = base + len(entries)
        self.hard = hard
        return hard, snapshot, entries

    def save(self, hard: HardState | None, entries: list[Entry], sync: bool = True) -> bool:
        """Persist new or rewritten entries and the hard state; durable on return, or,
        with ``sync`` False, once ``sync()`` has been called. Returns whether the
        records need that fsync (a commit index alone does not)."""
        records: list[LogRecord] = []
        seq = self.records.last_index
        if entries and entries[0].index <= self.last_index:
            seq += 1
            records.append(LogRecord(seq, {"op": "truncate", "from": entries[0].index}))
        for entry in entries:
            seq += 1
            records.append(LogRecord(seq, entry_record(entry)))
        needs_sync = bool(entries)
        if hard is not None:
            seq += 1
            records.append(LogRecord(seq, hard_record(hard)))
            needs_sync |= self.changes_vote(hard)
            self.hard = hard
        if records:
            self.records.append(records, sync and needs_sync)
        if entries:
            self.last_index = entries[-1].index
        return needs_sync and bool(records)

    def changes_vote(self, hard: HardState) -> bool:
        """Whether ``hard`` changes the term or vote: those are durable before any reply."""
        return (hard.term, hard.vote) != (self.hard.term, self.hard.vote)

    def sync(self) -> None:
        """Make everything saved so far durable. Safe to call from another thread while
        the event loop carries on, as long as nothing is saved meanwhile."""
        self.records.sync()

    def save_snapshot(self, snapshot: Snapshot, after: list[Entry]) -> None:
        """Persist ``snapshot``, then replace the log by the entries ``after`` it: a
        fresh segment is written first, the old segments deleted last."""
        self.write_snapshot(snapshot)
        self.replace_log(snapshot, after)

    def write_snapshot(self, snapshot: Snapshot) -> None:
        """Replace the snapshot file atomically (a forked child may call this)."""
        self.snapshots.save(encode_snapshot(snapshot))

    def read_snapshot(self) -> Snapshot | None:
        raw = self.snapshots.read()
        return decode_snapshot(raw) if raw is not None else None

    def replace_log(self, snapshot: Snapshot, after: list[Entry]) -> None:
        """Once ``snapshot`` is on disk: the log becomes the entries ``after`` it."""
        old = self.records.segments()
        seq = self.records.last_index + 1
        current = self.records.start_segment(seq)
        records = [LogRecord(seq, {"op": "truncate", "from": snapshot.index + 1}),
                   LogRecord(seq + 1, hard_record(self.hard))]
        records += [LogRecord(seq + 2 + i, entry_record(e)) for i, e in enumerate(after)]
        self.records.append(records)
        for path in old:
            if path != current:  # an empty segment is reopened under its own name
                path.unlink()
        fsync_dir(self.records.directory)
        self.last_index = snapshot.index + len(after)

    def discard_snapshot_in_progress(self) -> None:
        """A snapshot a killed child was writing: its temp file goes."""
        self.snapshots.discard_temp()

    def close(self) -> None:
        self.records.close()


def entry_record(entry: Entry) -> dict[str, object]:
    return {"op": "entry", "term": entry.term, "index": entry.index, "kind": entry.kind,
            "raw": entry.data}


def hard_record(hard: HardState) -> dict[str, object]:
    return {"op": "hard", "term": hard.term, "vote": hard.vote, "commit": hard.commit}

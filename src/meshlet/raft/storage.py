"""Durable Raft state: the hard state (term, vote, commit) and the log.

The hard state is one small file replaced atomically (temp file, fsync, rename, fsync
of the directory). The log is an append-only record log (``meshlet.server.wal``: a CRC
per record, a torn tail truncated, a corrupt middle refused). It holds ``entry``
records and, when a leader overwrote a conflicting suffix, ``truncate`` records that
replay as "drop everything from index N". ``save`` returns after fsync, so the core's
obligation (persist before sending) holds when the driver calls it first.
"""

from __future__ import annotations

import base64
import json
import os
from pathlib import Path

from meshlet.errors import StorageError
from meshlet.raft.core import Entry, HardState
from meshlet.server.wal import CommandLog, LogRecord, fsync_dir


class RaftStorage:
    def __init__(self, directory: Path) -> None:
        self.directory = directory
        directory.mkdir(parents=True, exist_ok=True)
        self.hard_path = directory / "hardstate.json"
        self.records = CommandLog(directory / "raft-log")
        self.last_index = 0

    def __repr__(self) -> str:
        return f"<RaftStorage {self.directory} last_index={self.last_index}>"

    def load(self) -> tuple[HardState, list[Entry]]:
        """What was persisted. Raises StorageError on corruption."""
        hard = HardState()
        if self.hard_path.exists():
            try:
                body = json.loads(self.hard_path.read_text())
                hard = HardState(body["term"], body["vote"], body["commit"])
            except (ValueError, KeyError) as exc:
                raise StorageError(f"{self.hard_path} is unreadable: {exc}") from None
        entries: list[Entry] = []
        for record in self.records.recover():
            cmd = record.command
            if cmd["op"] == "truncate":
                del entries[cmd["from"] - 1:]
            else:
                entry = Entry(cmd["term"], cmd["index"], base64.b64decode(cmd["data"]))
                if entry.index != len(entries) + 1:
                    raise StorageError(f"raft log in {self.directory}: entry {entry.index} "
                                       f"follows {len(entries)}")
                entries.append(entry)
        self.last_index = len(entries)
        return hard, entries

    def save(self, hard: HardState | None, entries: list[Entry]) -> None:
        """Persist new or rewritten entries, then the hard state; durable on return."""
        records: list[LogRecord] = []
        seq = self.records.last_index
        if entries and entries[0].index <= self.last_index:
            seq += 1
            records.append(LogRecord(seq, {"op": "truncate", "from": entries[0].index}))
        for entry in entries:
            seq += 1
            records.append(LogRecord(seq, {
                "op": "entry", "term": entry.term, "index": entry.index,
                "data": base64.b64encode(entry.data).decode("ascii")}))
        if records:
            self.records.append(records)
            self.last_index = entries[-1].index
        if hard is not None:
            tmp = self.hard_path.with_suffix(".tmp")
            with open(tmp, "w") as f:
                json.dump({"term": hard.term, "vote": hard.vote, "commit": hard.commit}, f)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, self.hard_path)
            fsync_dir(self.directory)

    def close(self) -> None:
        self.records.close()

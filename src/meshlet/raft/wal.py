"""Raft's write-ahead log: append-only records in segment files, a CRC per record,
and the one snapshot file beside them. ``raft/storage.py`` gives the records their
meaning (entries, hard state, truncations); this module only keeps them intact.

Record: ``u32 length | u32 crc32(payload) | payload`` where payload is JSON
``{"index": N, "cmd": {...}}``, or, for a Raft entry (``{"op": "entry", ..., "raw":
bytes}``), a zero byte, a fixed header and the entry's bytes as they are: the hot path
writes every entry once per server, and JSON with base64 cost more than the rest of
the write. ``append`` returns only after fsync (unless told to leave that to a later
``sync``), so a caller may acknowledge once it returns. Recovery truncates a torn last
record (a crash mid-write) but refuses, with StorageError, a damaged record that has
valid data after it: that is corruption, and silently dropping acknowledged writes
behind it would be worse.

Segments are named ``log-<first index>.wal``; after a snapshot the Raft storage starts a
new segment and deletes the older ones. Recovery opens each segment, and the snapshot,
without following a symlink and refuses one that is not a regular file of ours
(``private_files.open_fd``): a link planted in the data directory would otherwise send
the reads and a torn tail's truncation to a file elsewhere.
"""

from __future__ import annotations

import json
import os
import struct
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from meshlet.errors import StorageError
from meshlet.private_files import fsync_dir, open_append, open_fd, open_new, private_dir

HEADER = struct.Struct(">II")
ENTRY = struct.Struct(">BQQQB")   # marker 0, record index, entry term, entry index, kind
MAX_RECORD = 64 * 1024 * 1024


@dataclass(frozen=True)
class LogRecord:
    index: int
    command: dict[str, Any]


def encode_record(record: LogRecord) -> bytes:
    cmd = record.command
    if cmd.get("op") == "entry" and isinstance(cmd.get("raw"), bytes):
        payload = ENTRY.pack(0, record.index, cmd["term"], cmd["index"], cmd["kind"]) \
            + cmd["raw"]
    else:
        payload = json.dumps({"index": record.index, "cmd": cmd},
                             separators=(",", ":")).encode()
    return HEADER.pack(len(payload), zlib.crc32(payload)) + payload


def decode_payload(payload: bytes) -> LogRecord:
    if payload[:1] == b"\0":
        _, index, term, entry_index, kind = ENTRY.unpack_from(payload)
        return LogRecord(index, {"op": "entry", "term": term, "index": entry_index,
                                 "kind": kind, "raw": payload[ENTRY.size:]})
    body = json.loads(payload)
    return LogRecord(body["index"], body["cmd"])


def read_segment(path: Path, data: bytes, is_last: bool) -> tuple[list[LogRecord], int]:
    """Records of one segment (``data``, read from ``path``) and the byte length of its
    valid prefix.

    A damaged record at the very end of the last segment is a torn write and ends the
    valid prefix; anywhere else it raises StorageError naming the file and offset.
    """
    records: list[LogRecord] = []
    offset = 0
    while offset < len(data):
        problem = None
        end = offset + HEADER.size
        if end > len(data):
            problem = "truncated header"
        else:
            length, crc = HEADER.unpack_from(data, offset)
            end = offset + HEADER.size + length
            if length > MAX_RECORD or end > len(data):
                problem = "truncated record"
            elif zlib.crc32(data[offset + HEADER.size:end]) != crc:
                problem = "checksum mismatch"
        if problem is not None:
            if is_last and end >= len(data):
                return records, offset
            raise StorageError(
                f"command log {path} is corrupt at byte {offset}: {problem}; "
                "refusing to start rather than lose acknowledged writes")
        records.append(decode_payload(data[offset + HEADER.size:end]))
        offset = end
    return records, offset


class CommandLog:
    """The durable log. Not thread-safe: one writer at a time (the Raft driver; its
    ``sync`` alone may run on another thread while nothing is appended)."""

    def __init__(self, directory: Path) -> None:
        self.directory = private_dir(directory)
        self._file: Any = None
        self.last_index = 0

    def __repr__(self) -> str:
        return f"<CommandLog {self.directory} last_index={self.last_index}>"

    def segments(self) -> list[Path]:
        return sorted(self.directory.glob("log-*.wal"),
                      key=lambda p: int(p.stem.split("-")[1]))

    def recover(self) -> Iterator[LogRecord]:
        """Yield every valid record in order, truncating a torn tail, then open for append."""
        segments = self.segments()
        for i, path in enumerate(segments):
            is_last = i == len(segments) - 1
            with os.fdopen(open_fd(path, os.O_RDWR if is_last else os.O_RDONLY),
                           "r+b" if is_last else "rb") as f:
                data = f.read()
                records, valid_length = read_segment(path, data, is_last)
                if valid_length != len(data):  # a torn tail, in the last segment only
                    f.truncate(valid_length)
                    f.flush()
                    os.fsync(f.fileno())
            for record in records:
                if self.last_index and record.index != self.last_index + 1:
                    raise StorageError(
                        f"command log {path}: index {record.index} follows "
                        f"{self.last_index}; refusing to start with a gap")
                self.last_index = record.index
                yield record
        if segments:
            self._file = open_append(segments[-1])
        else:
            self.start_segment(1)

    def start_segment(self, first_index: int) -> Path:
        if self._file is not None:
            self._file.close()
        path = self.directory / f"log-{first_index:020d}.wal"
        self._file = open_append(path)
        fsync_dir(self.directory)
        return path

    def append(self, records: list[LogRecord], sync: bool = True) -> None:
        """Write and fsync a batch (group commit); durable when this returns. Without
        ``sync`` the batch reaches the OS only (it rides on the next fsync)."""
        for record in records:
            assert record.index == self.last_index + 1, (record.index, self.last_index)
            self.last_index = record.index
        self._file.write(b"".join(encode_record(r) for r in records))
        self._file.flush()
        if sync:
            self.sync()

    def sync(self) -> None:
        os.fdatasync(self._file.fileno())

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None


class SnapshotStore:
    """One current snapshot, replaced atomically (temp file, fsync, rename, fsync dir)."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.path = directory / "snapshot.bin"

    def save(self, data: bytes) -> None:
        tmp = self.directory / "snapshot.bin.tmp"
        with open_new(tmp) as f:
            f.write(HEADER.pack(len(data), zlib.crc32(data)) + data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self.path)
        fsync_dir(self.directory)

    def discard_temp(self) -> None:
        (self.directory / "snapshot.bin.tmp").unlink(missing_ok=True)

    def load(self) -> bytes | None:
        """The snapshot at start-up (a temp file left by a crash is removed)."""
        self.discard_temp()
        return self.read()

    def read(self) -> bytes | None:
        try:
            fd = open_fd(self.path, os.O_RDONLY)
        except FileNotFoundError:
            return None
        with os.fdopen(fd, "rb") as f:
            raw = f.read()
        if len(raw) < HEADER.size:
            raise StorageError(f"snapshot {self.path} is truncated")
        length, crc = HEADER.unpack_from(raw)
        data = raw[HEADER.size:HEADER.size + length]
        if len(data) != length or zlib.crc32(data) != crc:
            raise StorageError(f"snapshot {self.path} fails its checksum")
        return data

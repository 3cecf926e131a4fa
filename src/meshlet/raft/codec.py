"""Raft messages to and from bytes: length-prefixed binary frames.

A frame is a fixed header (message type, flags and every integer field), the two
node ids, then each entry as a small header and its bytes, then the snapshot if the
message carries one. Entry data travels as it is: no text encoding on the hot path,
where the leader frames every entry it replicates once per follower.
"""

from __future__ import annotations

import struct

from meshlet.errors import ConfigError
from meshlet.raft.core import Entry, Message, MsgType, Snapshot

FRAME = struct.Struct(">I")
MAX_FRAME = 64 * 1024 * 1024
HEAD = struct.Struct(">BBqqqqqqqqHHI")   # type, flags, 8 ints, id lengths, entry count
ENTRY = struct.Struct(">qqBI")           # term, index, kind, data length
SNAP = struct.Struct(">qqII")            # index, term, config length, data length
TYPES = list(MsgType)
CODES = {t: i for i, t in enumerate(TYPES)}
REJECT, HAS_SNAPSHOT = 1, 2


def encode(m: Message) -> bytes:
    frm, to = m.frm.encode(), m.to.encode()
    flags = (REJECT if m.reject else 0) | (HAS_SNAPSHOT if m.snapshot is not None else 0)
    parts = [HEAD.pack(CODES[m.type], flags, m.term, m.log_term, m.index, m.commit,
                       m.reject_term, m.context, m.stamp, m.rejected, len(frm), len(to),
                       len(m.entries)), frm, to]
    for e in m.entries:
        parts += (ENTRY.pack(e.term, e.index, e.kind, len(e.data)), e.data)
    if m.snapshot is not None:
        snap = m.snapshot
        parts += (SNAP.pack(snap.index, snap.term, len(snap.config), len(snap.data)),
                  snap.config, snap.data)
    payload = b"".join(parts)
    return FRAME.pack(len(payload)) + payload


def decode(payload: bytes) -> Message:
    """Raise ConfigError on a malformed frame (the connection is then dropped)."""
    try:
        (code, flags, term, log_term, index, commit, reject_term, context, stamp, rejected,
         frm_len, to_len, count) = HEAD.unpack_from(payload, 0)
        at = HEAD.size
        frm = payload[at:at + frm_len].decode()
        at += frm_len
        to = payload[at:at + to_len].decode()
        at += to_len
        entries: list[Entry] = []
        for _ in range(count):
            e_term, e_index, kind, size = ENTRY.unpack_from(payload, at)
            if e_index != index + 1 + len(entries):  # the log holds no gaps: refuse them here
                raise ValueError(f"entry {e_index} does not follow {index + len(entries)}")
            at += ENTRY.size
            entries.append(Entry(e_term, e_index, payload[at:at + size], kind))
            at += size
        snapshot = None
        if flags & HAS_SNAPSHOT:
            s_index, s_term, config_len, data_len = SNAP.unpack_from(payload, at)
            at += SNAP.size
            config = payload[at:at + config_len]
            data = payload[at + config_len:at + config_len + data_len]
            at += config_len + data_len
            snapshot = Snapshot(s_index, s_term, config, data)
        if at != len(payload):
            raise ValueError("its length does not match its contents")
        return Message(TYPES[code], frm, to, term, log_term, index, tuple(entries), commit,
                       bool(flags & REJECT), reject_term, context, snapshot, stamp,
                       rejected)
    except (struct.error, ValueError, IndexError, UnicodeDecodeError) as exc:
        raise ConfigError(f"malformed raft frame: {exc}") from None

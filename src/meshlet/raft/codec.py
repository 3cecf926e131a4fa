"""Raft messages to and from bytes: length-prefixed JSON frames."""

from __future__ import annotations

import base64
import json
import struct
from typing import Any

from meshlet.errors import ConfigError
from meshlet.raft.core import Entry, Message, MsgType, Snapshot

FRAME = struct.Struct(">I")
MAX_FRAME = 64 * 1024 * 1024


def encode(m: Message) -> bytes:
    body: dict[str, Any] = {
        "type": m.type.value, "frm": m.frm, "to": m.to, "term": m.term,
        "log_term": m.log_term, "index": m.index, "commit": m.commit,
        "reject": m.reject, "reject_term": m.reject_term, "context": m.context,
        "stamp": m.stamp, "rejected": m.rejected,
        "entries": [[e.term, e.index, base64.b64encode(e.data).decode("ascii"), e.kind]
                    for e in m.entries]}
    if m.snapshot is not None:
        snap = m.snapshot
        body["snapshot"] = [snap.index, snap.term, snap.config.decode(),
                            base64.b64encode(snap.data).decode("ascii")]
    payload = json.dumps(body, separators=(",", ":")).encode()
    return FRAME.pack(len(payload)) + payload


def decode(payload: bytes) -> Message:
    """Raise ConfigError on a malformed frame (the connection is then dropped)."""
    try:
        b = json.loads(payload)
        snap = b.get("snapshot")
        snapshot = Snapshot(snap[0], snap[1], snap[2].encode(), base64.b64decode(snap[3])) \
            if snap is not None else None
        return Message(MsgType(b["type"]), b["frm"], b["to"], b["term"], b["log_term"],
                       b["index"], tuple(Entry(t, i, base64.b64decode(d), k)
                                         for t, i, d, k in b["entries"]),
                       b["commit"], b["reject"], b["reject_term"], b["context"], snapshot,
                       b["stamp"], b["rejected"])
    except (ValueError, KeyError, TypeError, IndexError, AttributeError) as exc:
        raise ConfigError(f"malformed raft frame: {exc}") from None

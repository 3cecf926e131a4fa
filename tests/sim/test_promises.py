"""The simulator's check of what a message promises about its sender's storage: each
rule refuses a storage that lacks the promise and accepts one that keeps it."""

from __future__ import annotations

import random

from meshlet.raft.core import Entry, HardState, Message, MsgType, RaftNode, Snapshot
from meshlet.raft.entry_log import EntryLog
from meshlet.raft.memory import MemoryStorage
from tests.sim.promises import Promises


def stored(term: int, vote: str | None = None, terms: tuple[int, ...] = ()) -> MemoryStorage:
    storage = MemoryStorage()
    storage.save(HardState(term, vote), [Entry(t, i) for i, t in enumerate(terms, 1)])
    return storage


def broken(m: Message, storage: MemoryStorage, promises: Promises | None = None) -> str | None:
    _, snapshot, entries = storage.load()
    sender = RaftNode(m.frm, random.Random(0),
                      log=EntryLog.of(entries, snapshot.index if snapshot else 0))
    return (promises or Promises()).broken(m, storage, sender)


def test_a_message_needs_its_term_stored() -> None:
    assert broken(Message(MsgType.APPEND_RESP, "f", "l", 3, reject=True), stored(2)) \
        == "stored term 2"
    assert broken(Message(MsgType.APPEND_RESP, "f", "l", 3, reject=True), stored(3)) is None
    # A pre-vote asks for the next term; a granted one answers in the asker's.
    assert broken(Message(MsgType.PRE_VOTE, "c", "f", 3), stored(2)) is None
    assert broken(Message(MsgType.PRE_VOTE, "c", "f", 3), stored(1)) is not None
    assert broken(Message(MsgType.PRE_VOTE_RESP, "f", "c", 9), stored(2)) is None
    assert broken(Message(MsgType.PRE_VOTE_RESP, "f", "c", 9, reject=True), stored(2))


def test_a_vote_and_a_leadership_need_the_vote_stored() -> None:
    granted = Message(MsgType.VOTE_RESP, "f", "c", 3)
    assert broken(granted, stored(3, None)) == "stored vote None in term 3"
    assert broken(granted, stored(3, "other")) is not None
    assert broken(granted, stored(3, "c")) is None
    assert broken(granted, stored(4, None)) is None  # moved on: void
    assert broken(Message(MsgType.VOTE_RESP, "f", "c", 3, reject=True), stored(3)) is None
    for kind in (MsgType.VOTE, MsgType.APPEND, MsgType.TIMEOUT_NOW):
        assert broken(Message(kind, "l", "f", 3), stored(3, None)) is not None
        assert broken(Message(kind, "l", "f", 3), stored(3, "l")) is None


def test_an_acknowledged_append_needs_the_leaders_entry_stored() -> None:
    promises = Promises()
    promises.note(Message(MsgType.APPEND, "l", "f", 3, 1, 1, (Entry(3, 2), Entry(3, 3))))
    ack = Message(MsgType.APPEND_RESP, "f", "l", 3, index=3)
    assert broken(ack, stored(3, "l", (1, 3)), promises) is not None  # not there
    assert broken(ack, stored(3, "l", (1, 2, 2)), promises) is not None  # another term's
    assert broken(ack, stored(3, "l", (1, 3, 3)), promises) is None
    assert broken(ack, stored(4, None, (1, 2, 2)), promises) is None  # moved on: void
    compacted = stored(3, "l")
    compacted.save_snapshot(Snapshot(5, 3, b""), [])
    assert broken(ack, compacted, promises) is None  # folded into a snapshot

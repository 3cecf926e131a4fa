"""Raft frames: every message survives a round trip; a damaged frame is refused."""

from __future__ import annotations

import dataclasses

import pytest
from hypothesis import given
from hypothesis import strategies as st

from meshlet.errors import ConfigError
from meshlet.raft.codec import FRAME, decode, encode
from meshlet.raft.core import Entry, Message, MsgType, Snapshot

ints = st.integers(min_value=0, max_value=2**62)
ids = st.text(min_size=1, max_size=20)
entries = st.builds(Entry, ints, ints, st.binary(max_size=64), st.integers(0, 255))
snapshots = st.none() | st.builds(Snapshot, ints, ints, st.binary(max_size=64),
                                  st.binary(max_size=256))


def following(m: Message) -> Message:
    """``m`` with its entries numbered on from its ``index``, as every sender numbers them."""
    return dataclasses.replace(m, entries=tuple(
        dataclasses.replace(e, index=m.index + 1 + i) for i, e in enumerate(m.entries)))


messages = st.builds(Message, st.sampled_from(list(MsgType)), ids, ids, ints, ints, ints,
                     st.lists(entries, max_size=5).map(tuple), ints, st.booleans(), ints,
                     ints, snapshots, ints, ints).map(following)


@given(messages)
def test_every_message_round_trips(m: Message) -> None:
    frame = encode(m)
    (length,) = FRAME.unpack_from(frame)
    assert length == len(frame) - FRAME.size
    assert decode(frame[FRAME.size:]) == m


def test_damaged_frames_are_refused() -> None:
    m = Message(MsgType.APPEND, "a", "b", 3, index=6, entries=(Entry(3, 7, b"hello"),))
    payload = encode(m)[FRAME.size:]
    for broken in (payload[:-1], payload + b"x", payload[:10], b"\xff" + payload[1:]):
        with pytest.raises(ConfigError, match="malformed raft frame"):
            decode(broken)


@pytest.mark.parametrize("indexes", [(8,), (7, 9), (7, 7), (-1,)])
def test_entries_that_do_not_follow_the_message_index_are_refused(
        indexes: tuple[int, ...]) -> None:
    """A gap or a repeat would break the log's numbering, which counts on from its
    snapshot: the frame is refused, and the connection dropped, before the core sees it."""
    m = Message(MsgType.APPEND, "a", "b", 3, index=6,
                entries=tuple(Entry(3, i, b"x") for i in indexes))
    with pytest.raises(ConfigError, match="does not follow"):
        decode(encode(m)[FRAME.size:])

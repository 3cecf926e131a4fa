"""What a Raft message promises about its sender's storage, checked as it is sent.

A server may send a message only once what the message tells others is durable: a
crash right after the send keeps only what was stored, and the receiver goes on
trusting it. So, at the moment a driver hands a message to its transport, its storage
must already hold:

- the message's term (a pre-vote asks for the term after the stored one; a granted
  pre-vote answers in the asker's term, and promises nothing);
- the vote the message speaks for, if the stored term is the message's: a vote
  request or anything a leader sends (the candidate's vote for itself), a granted vote
  (for the candidate). Otherwise the restarted server could vote again in that term;
- for a successful append response up to index i, entry i with the term the leader
  sent there (and, by log matching, the leader's entries before it), since the leader
  counts the copy towards commitment. The leader's own entries are exempt: it counts
  its own copy only once persisted (thesis §10.2.1).

A promise is void once the stored term has passed the message's: the sender moved on
by the protocol's own steps, which Raft's safety already allows for.
"""

from __future__ import annotations

from meshlet.raft.core import Message, MsgType, NodeId, RaftNode
from meshlet.raft.memory import MemoryStorage

LEADERS = (MsgType.APPEND, MsgType.SNAPSHOT, MsgType.TIMEOUT_NOW)


class Promises:
    """Remembers what each leader sent (its term at each index it named), to know
    what a follower's acknowledgement to it claims."""

    def __init__(self) -> None:
        self.leader_terms: dict[tuple[NodeId, int], dict[int, int]] = {}

    def broken(self, m: Message, stored: MemoryStorage, sender: RaftNode) -> str | None:
        """Why ``m`` must not have been sent with ``stored`` as it is, or None."""
        if m.type in (MsgType.APPEND, MsgType.SNAPSHOT):
            self.note(m)
        hard = stored.hard
        if m.type == MsgType.PRE_VOTE:
            floor = m.term - 1
        elif m.type == MsgType.PRE_VOTE_RESP and not m.reject:
            floor = 0
        else:
            floor = m.term
        if hard.term < floor:
            return f"stored term {hard.term}"
        if hard.term > m.term:
            return None
        voted = m.frm if m.type == MsgType.VOTE or m.type in LEADERS else \
            m.to if m.type == MsgType.VOTE_RESP and not m.reject else None
        if voted is not None and hard.vote != voted:
            return f"stored vote {hard.vote!r} in term {hard.term}"
        if m.type == MsgType.APPEND_RESP and not m.reject:
            term = self.leader_terms.get((m.to, m.term), {}).get(m.index)
            if term is None:  # answered with its commit index: committed, so unchanged
                term = sender.term_at(m.index)
            if not holds(stored, m.index, term):
                return f"stored log {stored!r} lacks entry {m.index} of term {term}"
        return None

    def note(self, m: Message) -> None:
        terms = self.leader_terms.setdefault((m.frm, m.term), {})
        if m.snapshot is not None:
            terms[m.snapshot.index] = m.snapshot.term
        else:
            terms[m.index] = m.log_term
            for entry in m.entries:
                terms[entry.index] = entry.term


def holds(stored: MemoryStorage, index: int, term: int) -> bool:
    """Whether ``stored`` keeps entry ``index`` of ``term`` (below its snapshot, any
    entry: only committed ones are compacted)."""
    base = stored.snapshot.index if stored.snapshot is not None else 0
    if index < base or index == 0:
        return True
    if index == base:
        assert stored.snapshot is not None
        return stored.snapshot.term == term
    return index - base <= len(stored.log) and stored.log[index - base - 1].term == term

"""The replicated write path: ``propose(command)`` → Raft log on a majority → apply on
every server → wake watchers. Same interface as the single-node ``ServerNode``.

Membership is static for now (every server is started with the full peer list).
Reads are served from local state (stale on followers); writes that reach a follower
are forwarded to the leader by the API layer.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from meshlet.errors import MeshletError, NotLeader
from meshlet.raft.core import Entry
from meshlet.raft.driver import RaftDriver
from meshlet.server.node import wait_for_index
from meshlet.state import Command, Result, StateMachine, decode_command, encode_command

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class PeerAddress:
    raft: tuple[str, int]
    http: str


class RaftServerNode:
    def __init__(self, data_dir: Path, node_id: str, peers: dict[str, PeerAddress]) -> None:
        self.data_dir = data_dir
        self.id = node_id
        self.peers = peers
        self.machine = StateMachine()
        self._changed = asyncio.Event()
        self.driver = RaftDriver(node_id, {p: a.raft for p, a in peers.items()},
                                 data_dir / "raft", self.apply_entry)

    def __repr__(self) -> str:
        return f"<RaftServerNode {self.id} {self.driver!r} index={self.machine.index}>"

    async def open(self) -> None:
        """Load the Raft log; committed entries are re-applied as the node starts."""
        await self.driver.start()

    async def stop(self) -> None:
        await self.driver.stop()

    def apply_entry(self, entry: Entry) -> Result | None:
        if not entry.data:
            return None  # a new leader's empty entry
        command = decode_command(json.loads(entry.data))
        result = self.machine.apply(entry.index, command)
        self._changed.set()
        self._changed = asyncio.Event()
        return result

    async def propose(self, command: Command) -> Result:
        """Commit ``command`` on a majority. Raises MeshletError (NotLeader on a
        follower: the API forwards those).

        Unlike the single node, nothing is checked against local state first: a
        follower's state, or a new leader's, may lag behind what is committed, so a
        check-and-set judged here could be wrong. Every server judges it the same way
        when it applies the entry, and the result comes back from there."""
        if not self.driver.is_leader:
            raise NotLeader("writes go to the leader")
        data = json.dumps(encode_command(command), separators=(",", ":")).encode()
        result = await self.driver.propose(data)
        assert isinstance(result, Result)
        if result.error is not None:
            raise result.error
        return result

    async def wait_for_change(self, current: Callable[[], int], min_index: int,
                              timeout: float) -> int:
        return await wait_for_index(self, current, min_index, timeout)

    async def read_barrier(self, consistency: str, max_stale: float | None) -> None:
        """Make a read as fresh as asked, or raise NotLeader so the API forwards it:
        ``stale`` serves local state (within ``max_stale`` of the leader, if given),
        ``default`` serves on the leader, ``consistent`` also confirms leadership with a
        quorum first (ReadIndex)."""
        if consistency == "stale":
            contact = self.driver.last_contact()
            if max_stale is None or (contact is not None and contact <= max_stale):
                return
            raise NotLeader(f"this server last heard from the leader {contact}s ago, "
                            f"more than max_stale={max_stale}s")
        if not self.driver.is_leader:
            raise NotLeader("reads of this consistency are served by the leader")
        if consistency == "consistent":
            await self.driver.read_index()

    def read_headers(self) -> dict[str, str]:
        contact = self.driver.last_contact()
        return {"X-Meshlet-Known-Leader": "true" if contact is not None else "false",
                "X-Meshlet-Last-Contact": f"{int((contact or 0) * 1000)}"}

    async def transfer_leader(self, to: str | None) -> str:
        """Hand leadership to ``to`` (or the most caught-up follower); raises
        NotLeader on a follower (forwarded), ConfigError for an unknown id."""
        from meshlet.errors import ConfigError, Unavailable
        if to is not None and (to not in self.peers or to == self.id):
            raise ConfigError(f"to: {to!r} is not another server of this cluster", "to")
        if not self.driver.is_leader:
            raise NotLeader("leadership is transferred by the leader")
        target = await self.driver.hand_over(to=to)
        if target is None:
            raise Unavailable("the transfer did not complete in time; try again")
        return target

    def leader_url(self) -> str | None:
        node = self.driver.node
        leader = node.leader if node is not None else None
        if leader is None or leader == self.id:
            return None
        return self.peers[leader].http

    def status(self) -> dict[str, Any]:
        node = self.driver.node
        assert node is not None
        members = []
        for peer_id, address in sorted(self.peers.items()):
            progress = node.progress.get(peer_id) if node.role.value == "leader" else None
            members.append({
                "id": peer_id, "raft": f"{address.raft[0]}:{address.raft[1]}",
                "http": address.http,
                "role": "leader" if peer_id == node.leader else "follower",
                "match_index": progress.match if progress else None})
        return {"mode": "raft", "leader": node.role.value == "leader", "id": self.id,
                "raft": {"term": node.term, "role": node.role.value,
                         "leader": node.leader, "commit": node.commit,
                         "applied": node.applied, "last_index": node.last_index,
                         "leader_changes": self.driver.leader_changes},
                "members": members}


def parse_peer(text: str) -> tuple[str, PeerAddress]:
    """``ID=RAFTHOST:PORT,HTTPHOST:PORT``; raises MeshletError."""
    from meshlet.addresses import parse_hostport, to_url
    node_id, sep, rest = text.partition("=")
    raft, comma, http = rest.partition(",")
    if not sep or not comma or not node_id:
        raise MeshletError(f"--peer {text!r}: expected ID=RAFTHOST:PORT,HTTPHOST:PORT",
                           "peer")
    return node_id, PeerAddress(parse_hostport(raft, "--peer"), to_url(http))

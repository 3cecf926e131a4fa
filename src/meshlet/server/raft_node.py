"""The replicated write path: ``propose(command)`` → Raft log on a majority → apply on
every server → wake watchers. A server alone is a one-member cluster on the same path.

Membership lives in the log: each member is ``{"raft": "HOST:PORT", "http": URL}``.
A new cluster starts from its founders (``--peer``, or the servers found by
``--bootstrap-expect``); a server joins a running one by asking any member to add it
(``--join``), and members are added and removed one at a time.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from meshlet.backoff import Backoff
from meshlet.errors import ConfigError, MeshletError, NotLeader, StorageError, Unavailable
from meshlet.observe.server_metrics import apply_histogram
from meshlet.raft.core import Entry
from meshlet.raft.driver import RaftDriver
from meshlet.raft.transport import TransportTls
from meshlet.server.blocking import wait_for_index
from meshlet.server.waiting import WaitReport
from meshlet.state import COMMANDS, Command, Result, StateMachine
from meshlet.state.ca import MAX_ROOTS

log = logging.getLogger(__name__)
EMPTY_STATE = StateMachine().snapshot()


@dataclass(frozen=True)
class PeerAddress:
    raft: tuple[str, int] | None
    http: str

    def info(self) -> dict[str, str]:
        raft = f"{self.raft[0]}:{self.raft[1]}" if self.raft is not None else ""
        return {"raft": raft, "http": self.http}


class RaftServerNode:
    def __init__(self, data_dir: Path, node_id: str, address: PeerAddress,
                 founders: dict[str, PeerAddress] | None = None,
                 snapshot_every: int = 8192, snapshot_interval: float = 0.0,
                 tls: TransportTls | None = None) -> None:
        """``founders`` bootstraps a new cluster (ignored once the data directory holds
        one); without it the server waits to be added to a cluster. ``tls``: Raft
        between servers in mutual TLS (a server with a Raft address always has it)."""
        self.data_dir = data_dir
        self.id = node_id
        self.address = address
        self.machine = StateMachine()
        self.ca_file: str | None = None  # the cluster's root, to check other servers' HTTPS
        # Told the CA's root generations a cluster it joins is at (``ServerTls.adopt``),
        # so that it shows a certificate the cluster trusts, its old roots pruned.
        self.adopt_roots: Callable[[tuple[int, tuple[int, ...]]], object] | None = None
        self._changed = asyncio.Event()
        self._listeners: list[Callable[[], None]] = []
        self.apply_latency = apply_histogram()  # the server registers it for /metrics
        self.driver = RaftDriver.on_disk(
            node_id, address.raft, data_dir / "raft", self.apply_entry, self.restore,
            self.machine.snapshot,
            {i: a.info() for i, a in founders.items()} if founders is not None else None,
            snapshot_every, snapshot_interval=snapshot_interval, tls=tls)

    def __repr__(self) -> str:
        return f"<RaftServerNode {self.id} {self.driver!r} index={self.machine.index}>"

    @property
    def is_leader(self) -> bool:
        return self.driver.is_leader

    def self_info(self) -> dict[str, Any]:
        active, trusted = self.machine.ca.generations()
        return {"id": self.id, **self.address.info(), "bootstrapped": bool(self.driver.members),
                "members": self.driver.members,
                "ca": {"active": active, "trusted": list(trusted)}}

    async def refresh_members(self, join_token: str | None, interval: float = 1.0) -> None:
        """Runs while the server does. The driver drops frames from servers that are not
        members; when it has dropped some since the last look, this server's log may
        lag behind the cluster's membership (it missed the addition of the server that
        now leads). Ask the servers it trusts for the members they know, and trust
        those too: they come from the cluster's own log."""
        from meshlet.api.client import Client
        seen = 0
        while True:
            await asyncio.sleep(interval)
            if self.driver.strangers() == seen:
                continue
            seen = self.driver.strangers()
            known = {**self.driver.hints, **self.driver.members}
            learnt: dict[str, Any] = {}
            for node_id in sorted(self.driver.trusted()):
                url = known.get(node_id, {}).get("http")
                if not url:
                    continue
                try:
                    async with Client(url, timeout=2.0, join_token=join_token,
                                      ca_file=self.ca_file) as client:
                        other = await client.raft_self()
                except MeshletError as exc:
                    log.debug("cannot ask %s for its members: %s", node_id, exc)
                    continue
                members = other.get("members")
                if isinstance(members, dict):
                    learnt.update({k: v for k, v in members.items() if isinstance(v, dict)})
            if set(learnt) - set(known):
                log.info("learnt of servers %s from the members", sorted(set(learnt) - set(known)))
                self.driver.learn(learnt, keep=True)

    async def open(self) -> None:
        """Load the snapshot and log; committed entries are re-applied as it starts."""
        await self.driver.start()

    async def stop(self) -> None:
        await self.driver.stop()

    def apply_entry(self, entry: Entry) -> Result | None:
        if not entry.data:
            return None  # a new leader's empty entry
        try:
            command = COMMANDS.decode(entry.data)
        except ConfigError as exc:  # not the client's fault: the log holds it
            raise StorageError(f"raft log entry {entry.index} holds no command this "
                               f"version can apply: {exc}") from None
        started = time.perf_counter()
        result = self.machine.apply(entry.index, command)
        self.apply_latency.observe(time.perf_counter() - started)
        self._notify()
        return result

    def restore(self, data: bytes) -> None:
        self.machine.restore(data or EMPTY_STATE)
        self._notify()

    def _notify(self) -> None:
        self._changed.set()
        self._changed = asyncio.Event()
        for listener in self._listeners:
            listener()

    def on_change(self, callback: Callable[[], None]) -> Callable[[], None]:
        self._listeners.append(callback)
        return lambda: self._listeners.remove(callback)

    async def propose(self, command: Command) -> Result:
        """Commit ``command`` on a majority. Raises MeshletError (NotLeader on a
        follower: the API forwards those).

        Only invalid input is refused up front: whether a check-and-set holds, or a
        key exists, depends on state that may lag behind what is committed here, so
        that is judged when the entry is applied, the same way on every server, and
        the result comes back from there."""
        error = self.machine.check(command)
        if isinstance(error, ConfigError):
            raise error
        if not self.driver.is_leader:
            raise NotLeader("writes go to the leader")
        result = await self.driver.propose(COMMANDS.encode(command))
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
        ``default`` serves on the leader under its lease (or, without one, as
        ``consistent`` does), ``consistent`` confirms leadership with a quorum first
        (ReadIndex)."""
        if consistency == "stale":
            contact = self.driver.last_contact()
            if max_stale is None or (contact is not None and contact <= max_stale):
                return
            raise NotLeader(f"this server last heard from the leader {contact}s ago, "
                            f"more than max_stale={max_stale}s")
        if not self.driver.is_leader:
            raise NotLeader("reads of this consistency are served by the leader")
        if consistency == "consistent" or not await self.driver.lease_read():
            await self.driver.read_index()

    def read_headers(self) -> dict[str, str]:
        contact = self.driver.last_contact()
        return {"X-Meshlet-Known-Leader": "true" if contact is not None else "false",
                "X-Meshlet-Last-Contact": f"{int((contact or 0) * 1000)}"}

    async def transfer_leader(self, to: str | None) -> str:
        """Hand leadership to ``to`` (or the most caught-up follower); raises
        NotLeader on a follower (forwarded), ConfigError for an unknown id."""
        members = self.driver.members
        if to is not None and (to not in members or to == self.id):
            raise ConfigError(f"to: {to!r} is not another server of this cluster", "to")
        if len(members) < 2:
            raise ConfigError("this server runs alone: there is no one to hand "
                              "leadership to", "to")
        if not self.driver.is_leader:
            raise NotLeader("leadership is transferred by the leader")
        target = await self.driver.hand_over(to=to)
        if target is None:
            raise Unavailable("the transfer did not complete in time; try again")
        return target

    async def add_member(self, node_id: str, raft: tuple[str, int] | None,
                         http: str) -> dict[str, Any]:
        """Add a server (or move one to new addresses); returns the members.
        Adding a member that is already there with the same addresses changes nothing."""
        if raft is None:
            raise ConfigError("raft: a member needs a Raft address", "raft")
        address = PeerAddress(raft, http)
        members = self.driver.members
        if members.get(node_id) == address.info():
            return members
        if not self.driver.is_leader:
            raise NotLeader("membership is changed by the leader")
        if any(not info.get("raft") for info in members.values()):
            raise ConfigError("this server was started alone, without --raft: restart it "
                              "with a Raft address before adding servers", "raft")
        if node_id in members:  # a new address: remove, then add back
            await self.driver.change_members({k: v for k, v in members.items()
                                              if k != node_id})
            members = self.driver.members
        await self.driver.change_members({**members, node_id: address.info()})
        return self.driver.members

    async def remove_member(self, node_id: str) -> dict[str, Any]:
        """Remove a server; removing one that is not a member is an error."""
        members = self.driver.members
        if node_id not in members:
            raise ConfigError(f"id: {node_id!r} is not a member of this cluster", "id")
        if not self.driver.is_leader:
            raise NotLeader("membership is changed by the leader")
        await self.driver.change_members({k: v for k, v in members.items() if k != node_id})
        return self.driver.members

    async def join(self, urls: list[str], attempts: int | None = None,
                   join_token: str | None = None) -> None:
        """Ask the servers at ``urls`` to add this one (proving it may with the
        cluster's ``join_token``), until one of them does; says what it is waiting for
        while none will."""
        from meshlet.api.client import Client
        backoff = Backoff(base=0.2, cap=5.0)
        report = WaitReport(log)
        attempt = 0
        while self.id not in self.driver.members:
            failures = []
            for url in urls:
                try:
                    async with Client(url, join_token=join_token,
                                      ca_file=self.ca_file) as client:
                        # Trust the cluster's servers before they are asked to add
                        # this one: the leader's first appends must not be dropped
                        # (with one server, its change commits only once we answer).
                        answer = await client.raft_self()
                        known = answer.get("members")
                        if isinstance(known, dict) and known:
                            self.driver.learn({**self.driver.hints, **known})
                        self.follow_cluster_roots(answer.get("ca"))
                        info = self.address.info()
                        members = await client.add_peer(self.id, info["raft"],
                                                        info["http"])
                    self.driver.learn(members)
                    log.info("joined the cluster through %s", url)
                    return
                except MeshletError as exc:
                    failures.append(str(exc))
            report.say(f"waiting to join a cluster: no --join server has added "
                       f"{self.id} yet; " + "; ".join(failures))
            attempt += 1
            if attempts is not None and attempt >= attempts:
                raise Unavailable(f"could not join through {', '.join(urls)}")
            await asyncio.sleep(backoff.next_delay())

    def follow_cluster_roots(self, roots: object) -> None:
        """Adopt the root generations another server of the cluster says it is at."""
        if self.adopt_roots is None or not isinstance(roots, dict):
            return
        try:
            active = int(roots["active"])
            trusted = tuple(sorted(int(g) for g in roots["trusted"]))
        except (KeyError, TypeError, ValueError):
            return
        if 0 < len(trusted) <= MAX_ROOTS:
            self.adopt_roots((active, trusted))

    def leader_url(self) -> str | None:
        node = self.driver.node
        leader = node.leader if node is not None else None
        if leader is None or leader == self.id:
            return None
        info = self.driver.members.get(leader)
        return info.get("http") if isinstance(info, dict) else None

    def status(self) -> dict[str, Any]:
        node = self.driver.node
        assert node is not None
        members = []
        leading = node.role.value == "leader"
        for peer_id, info in sorted(self.driver.members.items()):
            progress = node.progress.get(peer_id) if leading else None
            contact = self.driver.peer_contact(peer_id) if leading else \
                self.driver.last_contact() if peer_id == node.leader else None
            members.append({
                "id": peer_id, "raft": info.get("raft", ""), "http": info.get("http", ""),
                "role": "leader" if peer_id == node.leader else "follower",
                "last_contact": None if contact is None else round(contact, 3),
                "match_index": progress.match if progress else None})
        snaps = self.driver.snapshots
        return {"leader": leading, "id": self.id,
                "raft": {"term": node.term, "role": node.role.value,
                         "leader": node.leader, "commit": node.commit,
                         "applied": node.applied, "last_index": node.last_index,
                         "snapshot_index": node.offset,
                         "member": self.id in node.peers,
                         "leader_changes": self.driver.leader_changes,
                         "elections": node.elections,
                         "snapshots_taken": snaps.taken,
                         "snapshots_installed": snaps.installed,
                         "snapshot_seconds": round(snaps.seconds, 6),
                         "snapshot_bytes": snaps.last_bytes,
                         "frames_dropped": dict(self.driver.dropped)},
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

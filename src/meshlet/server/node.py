"""The single-node write path: ``propose(command)`` → log (fsync) → apply → wake watchers.

This is a one-member cluster: the seam the Raft issue replaces is ``_commit``, which
today appends to the local log and tomorrow waits for a majority. Concurrent proposals
are batched into one write + fsync (group commit) by a single writer task.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

from meshlet.errors import MeshletError, Unavailable
from meshlet.server.wal import CommandLog, LogRecord, SnapshotStore
from meshlet.state import Command, Result, StateMachine, decode_command, encode_command

log = logging.getLogger(__name__)


async def wait_for_index(node: ServerNode | Any, current: Callable[[], int], min_index: int,
                         timeout: float) -> int:
    """Block until ``current()`` exceeds ``min_index`` or ``timeout``; return it. The node
    replaces ``node._changed`` (an Event) and sets the old one on every apply."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while current() <= min_index:
        remaining = deadline - loop.time()
        if remaining <= 0:
            break
        try:
            await asyncio.wait_for(node._changed.wait(), remaining)
        except TimeoutError:
            break
    return current()


class ServerNode:
    def __init__(self, data_dir: Path, snapshot_every: int = 1000) -> None:
        self.data_dir = data_dir
        self.machine = StateMachine()
        self.log = CommandLog(data_dir / "log")
        self.snapshots = SnapshotStore(data_dir)
        self.snapshot_every = snapshot_every
        self._pending: list[tuple[Command, asyncio.Future[Result]]] = []
        self._wakeup = asyncio.Event()
        self._changed = asyncio.Event()
        self._writer: asyncio.Task[None] | None = None
        self._since_snapshot = 0
        self._closing = False

    def __repr__(self) -> str:
        return f"<ServerNode {self.data_dir} index={self.machine.index}>"

    def recover(self) -> None:
        """Load the snapshot, then replay the log after it. Raises StorageError."""
        data = self.snapshots.load()
        if data is not None:
            self.machine.restore(data)
        replayed = 0
        for record in self.log.recover():
            if record.index <= self.machine.index:
                continue
            self.machine.apply(record.index, decode_command(record.command))
            replayed += 1
        if self.log.last_index < self.machine.index:
            # The log was compacted past its tail: continue numbering after the snapshot.
            self.log.last_index = self.machine.index
            self.log.start_segment(self.machine.index + 1)
        self._since_snapshot = replayed
        log.info("recovered state at index %d (%d log records replayed)",
                 self.machine.index, replayed)

    def start(self) -> None:
        self._writer = asyncio.get_running_loop().create_task(self._write_loop())

    async def stop(self) -> None:
        self._closing = True
        if self._writer is not None:
            self._wakeup.set()
            await self._writer
        self.log.close()

    async def propose(self, command: Command) -> Result:
        """Commit ``command``; returns once durable and applied. Raises MeshletError."""
        if self._closing:
            raise Unavailable("server is shutting down")
        error = self.machine.check(command)
        if error is not None:
            raise error
        future: asyncio.Future[Result] = asyncio.get_running_loop().create_future()
        self._pending.append((command, future))
        self._wakeup.set()
        result = await future
        if result.error is not None:
            raise result.error
        return result

    async def _write_loop(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await self._wakeup.wait()
            self._wakeup.clear()
            batch, self._pending = self._pending, []
            if batch:
                await self._commit(loop, batch)
            if self._closing and not self._pending:
                return

    async def _commit(self, loop: asyncio.AbstractEventLoop,
                      batch: list[tuple[Command, asyncio.Future[Result]]]) -> None:
        first = self.log.last_index + 1
        records = [LogRecord(first + i, encode_command(cmd)) for i, (cmd, _) in enumerate(batch)]
        try:
            await loop.run_in_executor(None, self.log.append, records)
        except OSError as exc:
            log.error("command log write failed: %s", exc)
            for _, future in batch:
                future.set_exception(Unavailable(f"cannot write command log: {exc}"))
            raise
        for record, (cmd, future) in zip(records, batch, strict=True):
            future.set_result(self.machine.apply(record.index, cmd))
        self._notify()
        self._since_snapshot += len(batch)
        if self._since_snapshot >= self.snapshot_every:
            await self._snapshot(loop)

    async def _snapshot(self, loop: asyncio.AbstractEventLoop) -> None:
        data = self.machine.snapshot()
        index = self.machine.index
        await loop.run_in_executor(None, self.snapshots.save, data)
        await loop.run_in_executor(None, self.log.compact, index)
        self._since_snapshot = 0
        log.info("snapshot at index %d (%d bytes)", index, len(data))

    def _notify(self) -> None:
        self._changed.set()
        self._changed = asyncio.Event()

    async def wait_for_change(self, current: Callable[[], int], min_index: int,
                              timeout: float) -> int:
        return await wait_for_index(self, current, min_index, timeout)

    async def open(self) -> None:
        """Recover and start (what the server process does)."""
        self.recover()
        self.start()

    def status(self) -> dict[str, object]:
        return {"mode": "single", "leader": True}

    def leader_url(self) -> str | None:
        return None

    async def transfer_leader(self, to: str | None) -> str:
        from meshlet.errors import ConfigError
        raise ConfigError("this server runs alone, without Raft: there is no one to hand "
                          "leadership to", "to")

    async def read_barrier(self, consistency: str, max_stale: float | None) -> None:
        """One server: every read is already consistent."""

    def read_headers(self) -> dict[str, str]:
        return {"X-Meshlet-Known-Leader": "true", "X-Meshlet-Last-Contact": "0"}


__all__ = ["MeshletError", "ServerNode", "wait_for_index"]

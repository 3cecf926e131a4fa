"""The cluster's first management token: made once, by a leader, known to it alone.

While the replicated ACL table has never been bootstrapped, the leader proposes
``AclBootstrap`` with the hash of a fresh secret. The state machine accepts only the
first such command, however many servers race (``--bootstrap-expect 3``, a leader
deposed mid-proposal), so exactly one token is ever made. Its secret is written
(0600) to ``management.token.pending`` before it is proposed; once the table is
bootstrapped, a server whose pending secret is the one the state holds renames it to
``management.token``, and any other drops its own. A crash between commit and rename
is finished at the next start. The other servers only ever see the hash.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import uuid
from collections.abc import Callable
from pathlib import Path

from meshlet.errors import MeshletError
from meshlet.private_files import new_secret, read_secret, write_secret
from meshlet.security.acl import hash_secret
from meshlet.server.raft_node import RaftServerNode
from meshlet.state.commands import AclBootstrap

log = logging.getLogger(__name__)
TOKEN_FILE = "management.token"
POLL = 0.1  # seconds between looks at leadership (a new leader changes no index)


class AclBootstrapper:
    def __init__(self, node: RaftServerNode,
                 after: Callable[[], bool] = lambda: True) -> None:
        """``after``: what must hold before the token is made (the CA's root recorded,
        so that a cluster whose management token exists has its CA too)."""
        self.node = node
        self.after = after
        self.path = node.data_dir / TOKEN_FILE
        self.pending = node.data_dir / (TOKEN_FILE + ".pending")
        self.task: asyncio.Task[None] | None = None

    def __repr__(self) -> str:
        return f"<AclBootstrapper {self.path} done={self.node.machine.acl.bootstrapped}>"

    def token(self) -> str | None:
        """The management token, if this server made it (and it has been written)."""
        return read_secret(self.path)

    def start(self) -> None:
        self.task = asyncio.get_running_loop().create_task(self.run())

    async def stop(self) -> None:
        if self.task is not None:
            self.task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.task

    async def run(self) -> None:
        sm = self.node.machine
        while not sm.acl.bootstrapped:
            if self.node.is_leader and self.after():
                await self.attempt()
            if not sm.acl.bootstrapped:
                await self.node.wait_for_change(lambda: sm.index, sm.index, POLL)
        self.settle()

    async def attempt(self) -> None:
        # Reuse a pending secret: an earlier proposal of it may yet commit.
        secret = read_secret(self.pending)
        if secret is None:
            secret = new_secret()
            write_secret(self.pending, secret)
        try:
            await self.node.propose(AclBootstrap(uuid.uuid4().hex, hash_secret(secret)))
        except MeshletError as exc:  # another won, or leadership moved: look again
            log.debug("ACL bootstrap not committed here: %s", exc)

    def settle(self) -> None:
        """Keep the pending secret if it is the cluster's management token."""
        secret = read_secret(self.pending)
        if secret is None:
            return
        if self.node.machine.acl.resolve(hash_secret(secret)) is not None:
            os.replace(self.pending, self.path)
            log.info("created the cluster's management token: %s (keep it secret)",
                     self.path)
        else:
            self.pending.unlink(missing_ok=True)


def management_token_path(data_dir: Path) -> Path:
    return data_dir / TOKEN_FILE

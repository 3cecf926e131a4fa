"""Snapshots written by a forked child, as Redis's BGSAVE does.

Serialising the state machine takes about 40 ms per MB of state; on the event loop
that stalls every request and, for a large state, can outlast an election timeout.
``fork`` gives the child the state as of this moment, copy-on-write, so the parent
carries on while the child serialises it and replaces the snapshot file (temp file,
fsync, rename). The parent learns of the child's exit through a pidfd on its loop and
then folds the log into the snapshot. The child dies with its parent
(``PR_SET_PDEATHSIG``), so no orphan can write an old snapshot over a restarted
server's newer one.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import logging
import os
import signal
import time
from collections.abc import Callable

log = logging.getLogger(__name__)
PR_SET_PDEATHSIG = 1
# Looked up here, in the parent: a child forked while another thread held the dynamic
# loader's lock would hang on its first dlsym.
try:
    PRCTL: Callable[..., int] | None = ctypes.CDLL(None, use_errno=True).prctl
except (OSError, AttributeError):
    PRCTL = None


def die_with_parent(parent: int) -> None:
    """In the child: be killed when the parent dies; exit now if it already has."""
    if PRCTL is not None:
        PRCTL(PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() != parent:
        os._exit(1)


class BackgroundSnapshot:
    """One child writing the snapshot of applied ``index``."""

    def __init__(self, index: int, write: Callable[[], None],
                 done: Callable[[BackgroundSnapshot, bool], None]) -> None:
        """Fork now; the child runs ``write`` and exits. ``done(self, ok)`` is called on
        the running loop once the child has exited."""
        self.index = index
        self.started = time.perf_counter()
        self.done = done
        self.loop = asyncio.get_running_loop()
        parent = os.getpid()
        self.pid = os.fork()
        if self.pid == 0:  # the child: nothing here returns
            code = 1
            try:
                die_with_parent(parent)
                write()
                code = 0
            finally:
                os._exit(code)
        self.pidfd = os.pidfd_open(self.pid)
        self.loop.add_reader(self.pidfd, self.exited)

    def __repr__(self) -> str:
        return f"<BackgroundSnapshot index={self.index} pid={self.pid}>"

    @property
    def seconds(self) -> float:
        return time.perf_counter() - self.started

    def exited(self) -> None:
        ok = self.reap() == 0
        if not ok:
            log.error("the child writing the snapshot at index %d failed", self.index)
        self.done(self, ok)

    def reap(self) -> int | None:
        """Collect the child's exit code; None if someone else reaped it."""
        self.loop.remove_reader(self.pidfd)
        os.close(self.pidfd)
        try:
            _, status = os.waitpid(self.pid, 0)
        except ChildProcessError:
            return None
        return os.waitstatus_to_exitcode(status)

    def abort(self) -> None:
        """Kill the child and wait for it (a snapshot from the leader, or a stop, must
        not race with it over the snapshot file)."""
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.pid, signal.SIGKILL)
        self.reap()

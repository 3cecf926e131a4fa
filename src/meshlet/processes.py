"""Starting and stopping child processes so that none outlives the agent.

Children get their own session (so a signal reaches their whole group) and
PR_SET_PDEATHSIG, so the kernel stops them even if the agent is killed with -9.
"""

from __future__ import annotations

import asyncio
import ctypes
import os
import signal
from pathlib import Path

from meshlet.private_files import open_append, private_dir

PR_SET_PDEATHSIG = 1
_libc = ctypes.CDLL(None, use_errno=True)


def _die_with_parent() -> None:
    _libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


async def spawn(argv: list[str], env: dict[str, str], cwd: str | Path,
                log_path: Path) -> asyncio.subprocess.Process:
    """Start ``argv`` with output appended to ``log_path`` (0600, in a 0700
    directory); raises OSError."""
    private_dir(log_path.parent)
    with open_append(log_path) as log_file:
        return await asyncio.create_subprocess_exec(
            *argv, env=env, cwd=str(cwd), stdin=asyncio.subprocess.DEVNULL,
            stdout=log_file, stderr=asyncio.subprocess.STDOUT,
            start_new_session=True, preexec_fn=_die_with_parent)


def _signal_group(proc: asyncio.subprocess.Process, sig: int) -> None:
    try:
        os.killpg(proc.pid, sig)
    except ProcessLookupError:
        pass
    except PermissionError:
        proc.send_signal(sig)


async def terminate(proc: asyncio.subprocess.Process, grace: float = 5.0) -> int:
    """SIGTERM the process group, SIGKILL after ``grace`` seconds; return the exit code."""
    if proc.returncode is not None:
        _signal_group(proc, signal.SIGKILL)  # reap any grandchildren left in the group
        return proc.returncode
    _signal_group(proc, signal.SIGTERM)
    try:
        return await asyncio.wait_for(proc.wait(), grace)
    except TimeoutError:
        _signal_group(proc, signal.SIGKILL)
        return await proc.wait()
    finally:
        _signal_group(proc, signal.SIGKILL)

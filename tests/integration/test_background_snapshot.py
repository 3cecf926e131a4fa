"""A snapshot child never outlives its server: after a kill -9 it could otherwise write
an old snapshot over the one a restarted server has taken since."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

from tests.conftest import wait_until

PARENT = textwrap.dedent("""
    import asyncio, sys, time
    from meshlet.raft.background_snapshot import BackgroundSnapshot

    async def main():
        job = BackgroundSnapshot(1, lambda: time.sleep(60), lambda job, ok: None)
        print(job.pid, flush=True)
        await asyncio.sleep(60)

    asyncio.run(main())
""")


def alive(pid: int) -> bool:
    """Running, not merely a zombie waiting for a reaper."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return False
    return state != "Z"


def test_the_child_dies_with_a_killed_server() -> None:
    parent = subprocess.Popen([sys.executable, "-c", PARENT], stdout=subprocess.PIPE,
                              text=True)
    try:
        assert parent.stdout is not None
        child = int(parent.stdout.readline())
        assert alive(child)
        os.kill(parent.pid, signal.SIGKILL)
        parent.wait(10)
        wait_until(lambda: not alive(child), 10, "the snapshot child to die")
    finally:
        parent.kill()
        parent.wait(10)

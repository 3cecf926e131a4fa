"""The runtime the long-running processes (server, sidecar) use: uvloop when it is
installed, which halves the loop's own overhead, asyncio's otherwise; and the cyclic
garbage collector kept off what they loaded to start."""

from __future__ import annotations

import asyncio
import gc


def install_uvloop() -> bool:
    try:
        import uvloop
    except ImportError:
        return False
    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    return True


def freeze_startup_heap() -> None:
    """Once a process has started serving, leave what it holds out of every later
    collection: its modules, classes and start-up state are most of its heap and
    live as long as it does, yet each full collection walked them all, a pause of
    about 50 ms in a server under load (``gc.freeze``). What is frozen is still freed
    when nothing refers to it; only a cycle among start-up objects that later become
    garbage is kept."""
    gc.freeze()

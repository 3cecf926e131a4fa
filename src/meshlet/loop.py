"""The runtime the long-running processes (server, sidecar) use: uvloop when it is
installed, which halves the loop's own overhead, asyncio's otherwise; the cyclic
garbage collector kept off what they loaded to start; and a server's descriptor
limit."""

from __future__ import annotations

import asyncio
import gc
import resource


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


MAX_DESCRIPTORS = 1 << 20


def raise_descriptor_limit() -> int:
    """Raise the soft limit on open descriptors to the hard one, as the Go runtime
    does for every program: the soft default (often 1024) is a guard for old
    ``select`` users, and a server holds a connection for each agent's watch. Needs
    no privilege; returns the limit now in force."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = MAX_DESCRIPTORS if hard == resource.RLIM_INFINITY else min(hard, MAX_DESCRIPTORS)
    if soft != resource.RLIM_INFINITY and soft < target:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        except (ValueError, OSError):
            return soft
        return target
    return soft

"""The event loop the long-running processes (server, sidecar) use: uvloop when it is
installed, which halves the loop's own overhead; asyncio's otherwise."""

from __future__ import annotations

import asyncio


def install_uvloop() -> bool:
    try:
        import uvloop
    except ImportError:
        return False
    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    return True

"""Shared helpers: waiting on conditions with deadlines (never bare sleeps), and the
management token a test's server writes."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TypeVar

T = TypeVar("T")


def wait_until(predicate: Callable[[], T], timeout: float = 10.0,
               message: str = "condition", interval: float = 0.02) -> T:
    """Poll ``predicate`` until it returns something truthy; fail after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {message}")
        time.sleep(interval)


async def async_wait_until(predicate: Callable[[], Awaitable[T]], timeout: float = 10.0,
                           message: str = "condition", interval: float = 0.02) -> T:
    deadline = time.monotonic() + timeout
    while True:
        value = await predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {message}")
        await asyncio.sleep(interval)


def agent_rule_args() -> list[str]:
    """`meshlet acl policy create agent` options for the rules `meshlet up` gives its
    agent (the recipe docs/api.md shows for an agent on another machine)."""
    from meshlet.devmode import AGENT_RULES
    return [f"--rule={r['kind']}:{r['prefix']}:{r['access']}" for r in AGENT_RULES]


def management_token(data_dir: Path, timeout: float = 30.0) -> str:
    """The management token a server that founded its cluster keeps in ``data_dir``
    (written once its first leader has committed the ACL bootstrap)."""
    path = data_dir / "management.token"
    return wait_until(lambda: path.exists() and path.read_text().strip(), timeout,
                      f"the management token in {path}")


async def async_management_token(data_dir: Path, timeout: float = 30.0) -> str:
    path = data_dir / "management.token"

    async def read() -> str:
        return path.read_text().strip() if path.exists() else ""
    return await async_wait_until(read, timeout, f"the management token in {path}")

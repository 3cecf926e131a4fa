"""The cluster's trust bundle as the server last gave it, followed with one blocking
query per agent, for every workload's identity to react to a rotation at once."""

from __future__ import annotations

import asyncio
import logging
from typing import Any, Protocol

from meshlet.backoff import Backoff
from meshlet.errors import MeshletError

log = logging.getLogger(__name__)
ROOTS_WAIT = 30.0


class CaCalls(Protocol):
    """The CA calls an agent makes (``api.client.Client``'s)."""

    async def ca_roots(self, index: int | None = None, wait: float = 30.0
                       ) -> tuple[dict[str, Any], int]: ...

    async def ca_sign(self, csr: str, service: str, namespace: str = "default"
                      ) -> dict[str, Any]: ...


class RootsWatch:
    """``current`` is the last ``/v1/ca/roots`` answer (None before the first);
    ``changed`` is set, and replaced by a fresh event, whenever it changes: take it
    before reading ``current``, then wait on it."""

    def __init__(self, client: CaCalls) -> None:
        self.client = client
        self.current: dict[str, Any] | None = None
        self.changed = asyncio.Event()
        self.task: asyncio.Task[None] | None = None

    def __repr__(self) -> str:
        active = self.current["active_generation"] if self.current else None
        return f"<RootsWatch active={active}>"

    def start(self) -> None:
        if self.task is None:
            self.task = asyncio.get_running_loop().create_task(self.run())

    async def run(self) -> None:
        index, backoff = 0, Backoff(base=0.5, cap=30.0)
        while True:
            try:
                body, new_index = await self.client.ca_roots(index or None, ROOTS_WAIT)
            except MeshletError as exc:
                log.warning("CA roots watch failed; keeping the last trust bundle: %s", exc)
                await asyncio.sleep(backoff.next_delay())
                continue
            backoff.reset()
            index = 0 if new_index < index else new_index  # a reset server: start over
            if body != self.current:
                self.current = body
                changed, self.changed = self.changed, asyncio.Event()
                changed.set()

    async def stop(self) -> None:
        if self.task is not None:
            self.task.cancel()
            await asyncio.gather(self.task, return_exceptions=True)
            self.task = None

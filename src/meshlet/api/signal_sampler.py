"""Scrape every instance's sidecar while someone watches: the I/O behind ``/v1/signals``.

``touch()`` (each request) starts sampling if it is not running; it scrapes every
``INTERVAL`` seconds and stops once no one has asked for ``IDLE`` seconds. The last
``KEEP`` rounds are kept; ``observe/signals.compute`` answers from them.

The server fetches URLs that clients registered, so ``scrape_url`` admits only
``http://HOST:PORT`` whose host is the instance's own registered address; fetches have
connect/read timeouts, a size bound and follow no redirects. Others are unreachable.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import time
from collections import deque
from collections.abc import Callable, Iterable
from urllib.parse import urlsplit

import aiohttp

from meshlet.errors import ConfigError
from meshlet.observe.signals import Sidecar, parse
from meshlet.state.model import Instance

INTERVAL = 2.0
IDLE = 30.0
KEEP = 6            # rounds: the newest is compared with one ~10 s older
MAX_BYTES = 1 << 20
TIMEOUT = aiohttp.ClientTimeout(total=3.0, sock_connect=1.0, sock_read=2.0)


def scrape_url(inst: Instance) -> str | None:
    """Where to scrape ``inst`` (``meta.metrics`` + ``/metrics``), or None when that URL
    is not plain ``http://`` to the instance's own address with a port and no more."""
    raw = inst.meta.get("metrics", "")
    try:
        parts = urlsplit(raw)
        port = parts.port
    except ValueError:
        return None
    host = parts.hostname or ""
    if parts.scheme != "http" or port is None or parts.username or parts.password \
            or parts.query or parts.fragment or parts.path not in ("", "/"):
        return None
    if _norm(host) != _norm(inst.address):
        return None
    shown = f"[{host}]" if ":" in host else host
    return f"http://{shown}:{port}/metrics"


def _norm(host: str) -> str:
    try:
        return str(ipaddress.ip_address(host.strip("[]")))
    except ValueError:
        return host.lower()


class SignalSampler:
    """Rounds of scrapes of the instances ``catalog()`` lists, while asked for."""

    def __init__(self, catalog: Callable[[], Iterable[Instance]],
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.catalog = catalog
        self.clock = clock
        self.rounds: deque[dict[str, Sidecar]] = deque(maxlen=KEEP)
        self.walls: deque[float] = deque(maxlen=KEEP)
        self.asked = 0.0
        self.task: asyncio.Task[None] | None = None

    def __repr__(self) -> str:
        return f"<SignalSampler {len(self.rounds)} rounds, running={self.running}>"

    @property
    def running(self) -> bool:
        return self.task is not None and not self.task.done()

    def touch(self) -> None:
        self.asked = self.clock()
        if not self.running:
            self.task = asyncio.get_running_loop().create_task(self.run())

    async def run(self) -> None:
        async with aiohttp.ClientSession(timeout=TIMEOUT) as session:
            while self.clock() - self.asked < IDLE:
                started = self.clock()
                await self.round(session)
                await asyncio.sleep(max(0.0, INTERVAL - (self.clock() - started)))
        self.rounds.clear()
        self.walls.clear()

    async def round(self, session: aiohttp.ClientSession) -> None:
        at = self.clock()
        wall = time.time()
        targets = [(i.id, url) for i in self.catalog() if (url := scrape_url(i))]
        results = await asyncio.gather(*(self.scrape(session, url, at) for _, url in targets))
        self.rounds.append({id_: s for (id_, _), s in zip(targets, results, strict=True)
                            if s is not None})
        self.walls.append(wall)

    async def scrape(self, session: aiohttp.ClientSession, url: str, at: float
                     ) -> Sidecar | None:
        try:
            async with session.get(url, allow_redirects=False) as resp:
                if resp.status != 200:
                    return None
                body = await resp.content.read(MAX_BYTES + 1)
            if len(body) > MAX_BYTES:
                return None
            return parse(body.decode("utf-8", "replace"), at)
        except (aiohttp.ClientError, OSError, TimeoutError, ValueError, ConfigError):
            return None

    async def close(self, *_: object) -> None:
        if self.task is not None:
            self.task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.task

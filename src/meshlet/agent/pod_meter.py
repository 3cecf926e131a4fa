"""What each pod on this node served and used, for the autoscaler: the I/O half.

Every ``PERIOD`` seconds the agent scrapes each running pod's sidecar (its inbound
requests and latency histogram, see :mod:`meshlet.observe.samples`) and reads its
container's CPU time from the cgroup; the difference from the previous look is the
pod's measures (``autoscaler.replica_measures``), sent in its report. The control
plane's autoscaler averages the ready pods' measures.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import aiohttp

from meshlet.deploy.autoscaler import replica_measures
from meshlet.errors import ConfigError
from meshlet.observe.samples import Scrape, parse, window
from meshlet.runtime.runc import ContainerProcess, cpu_seconds

PERIOD = 5.0
SCRAPE_TIMEOUT = 2.0
MAX_SCRAPE_BYTES = 1 << 20  # a sidecar's scrape is a few kB


@dataclass(frozen=True)
class Look:
    """One look at a pod: its sidecar's counters and its container's CPU seconds."""

    process: int          # the app's pid: a restarted app starts its counters over
    scrape: Scrape
    cpu: float | None


class PodMeter:
    """The last look at each pod, so the next gives a window."""

    def __init__(self, scraped: Callable[[bool], None] = lambda ok: None) -> None:
        """``scraped(ok)`` is told the outcome of every scrape (the agent counts them)."""
        self.last: dict[str, Look] = {}
        self.scraped = scraped

    def __repr__(self) -> str:
        return f"<PodMeter {sorted(self.last)}>"

    async def measure(self, http: aiohttp.ClientSession, pod: str, metrics_url: str,
                      app: Any, cpus: float | None) -> dict[str, float | None] | None:
        """The pod's measures since the last look (None at the first look, or when its
        sidecar cannot be read)."""
        if not metrics_url or app is None:
            return None
        try:
            timeout = aiohttp.ClientTimeout(total=SCRAPE_TIMEOUT)
            async with http.get(f"{metrics_url}/metrics", timeout=timeout) as resp:
                if resp.status != 200:
                    self.scraped(False)
                    return None
                text = (await resp.content.read(MAX_SCRAPE_BYTES)).decode("utf-8", "replace")
            now = time.monotonic()
            scrape = parse(text, now)
        except (aiohttp.ClientError, OSError, TimeoutError, ConfigError):
            self.scraped(False)
            return None
        self.scraped(True)
        cpu = cpu_seconds(app.id) if isinstance(app, ContainerProcess) else None
        look = Look(app.pid, scrape, cpu)
        before = self.last.get(pod)
        self.last[pod] = look
        if before is None or before.process != look.process:
            return None
        used = (look.cpu - before.cpu
                if look.cpu is not None and before.cpu is not None else None)
        return replica_measures(window(before.scrape, scrape), used, cpus)

    def forget(self, pod: str) -> None:
        self.last.pop(pod, None)

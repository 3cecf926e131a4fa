"""Scrape sidecars' metrics on a schedule: the I/O behind ``meshlet capacity``.

``sample(targets, ...)`` GETs every target's ``/metrics`` at once, every ``interval``
seconds for ``seconds``, and returns each target's scrapes (``samples.parse``). All
scrapes of one round carry the round's start time, so every replica's window is the
same sampling time. Ctrl-C (SIGINT) ends the sampling early: one last round is taken at
once, and what was measured up to then is returned.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import aiohttp

from meshlet.errors import MeshletError, NetworkError
from meshlet.observe.samples import Scrape, parse

SCRAPE_TIMEOUT = 5.0


@dataclass(frozen=True)
class Target:
    """One replica to scrape: its instance id, its node and its sidecar's metrics URL."""

    instance: str
    node: str
    url: str


@dataclass
class Sampled:
    """What the sampling got: scrapes per instance, the rounds' times, and per instance
    the last failure (a replica that went away mid-way keeps the scrapes it had)."""

    scrapes: dict[str, list[Scrape]] = field(default_factory=dict)
    rounds: list[float] = field(default_factory=list)
    failures: dict[str, str] = field(default_factory=dict)

    @property
    def seconds(self) -> float:
        return self.rounds[-1] - self.rounds[0] if len(self.rounds) > 1 else 0.0


async def _scrape(session: aiohttp.ClientSession, target: Target, service: str,
                  at: float) -> Scrape:
    try:
        async with session.get(f"{target.url.rstrip('/')}/metrics") as resp:
            if resp.status != 200:
                raise NetworkError(f"HTTP {resp.status}")
            text = await resp.text()
    except (aiohttp.ClientError, OSError, TimeoutError, ValueError) as exc:
        raise NetworkError(str(exc) or type(exc).__name__) from None
    return parse(text, at, service)


async def _round(session: aiohttp.ClientSession, targets: list[Target], service: str,
                 at: float, sampled: Sampled) -> None:
    results = await asyncio.gather(*(_scrape(session, t, service, at) for t in targets),
                                   return_exceptions=True)
    sampled.rounds.append(at)
    for target, result in zip(targets, results, strict=True):
        if isinstance(result, MeshletError):
            sampled.failures[target.instance] = f"{target.url}: {result.message}"
        elif isinstance(result, BaseException):
            raise result
        else:
            sampled.scrapes.setdefault(target.instance, []).append(result)


async def sample(targets: list[Target], service: str, seconds: float, interval: float,
                 on_first: Callable[[Sampled], None] | None = None,
                 clock: Callable[[], float] = time.monotonic) -> Sampled:
    """Scrape ``targets`` every ``interval`` seconds for ``seconds`` (see the module doc).

    ``on_first`` is called once the first round is in (``meshlet capacity`` says then
    that sampling runs). Raises NetworkError when no target answers the first round.
    """
    sampled = Sampled()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    with contextlib.suppress(NotImplementedError, RuntimeError):
        loop.add_signal_handler(signal.SIGINT, stop.set)
    timeout = aiohttp.ClientTimeout(total=min(SCRAPE_TIMEOUT, max(interval, 1.0)))
    try:
        async with aiohttp.ClientSession(timeout=timeout) as session:
            start = clock()
            await _round(session, targets, service, start, sampled)
            if not sampled.scrapes:
                raise NetworkError(f"cannot scrape any instance of {service!r}: "
                                   + "; ".join(sampled.failures.values()))
            if on_first is not None:
                on_first(sampled)
            ticks = math.ceil(round(seconds / interval, 9))
            for tick in range(1, ticks + 1):
                due = min(start + tick * interval, start + seconds)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), max(0.0, due - clock()))
                await _round(session, targets, service, clock(), sampled)
                if stop.is_set():
                    break
    finally:
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.remove_signal_handler(signal.SIGINT)
    return sampled

"""Ports for apps that do not name their own.

The agent picks an app's port before the app runs, and the app binds it a moment
later. A port from ``bind(0)`` would be free only while it was tested: in between, the
kernel may hand the same number to any ``bind(0)`` or ``connect()`` on the host (in the
tests a sidecar's own inbound listener took its app's port so). The kernel hands out
only ports in ``ip_local_port_range``, so the agent picks from outside it, as
Kubernetes puts node ports at 30000-32767 below the default range.
"""

from __future__ import annotations

import random
import socket
from pathlib import Path

PORT_RANGE = Path("/proc/sys/net/ipv4/ip_local_port_range")
LOWEST = 10000  # below: the well-known and registered ports of services people run
ATTEMPTS = 64


def ephemeral_range(path: Path | None = None) -> tuple[int, int]:
    """The kernel's range for ``bind(0)`` and ``connect()`` (Linux's default if it
    cannot be read)."""
    try:
        low, high = (int(word) for word in (path or PORT_RANGE).read_text().split())
        return low, high
    except (OSError, ValueError):
        return 32768, 60999


def candidates(low: int, high: int) -> list[range]:
    """The port ranges outside ``low``-``high`` that an app may be given."""
    found = [range(LOWEST, low), range(high + 1, 65536)]
    return [r for r in found if len(r) > 0]


def free_app_port(host: str, rng: random.Random | None = None) -> int:
    """A port on ``host`` that nothing listens on, outside the kernel's range when the
    range leaves room; else one ``bind(0)`` gives."""
    pick = rng or random.SystemRandom()
    ranges = candidates(*ephemeral_range())
    for _ in range(ATTEMPTS if ranges else 0):
        chosen = pick.choice(ranges)
        port = pick.randrange(chosen.start, chosen.stop)
        with socket.socket() as s:
            try:
                s.bind((host, port))
            except OSError:
                continue  # taken: another
            return port
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])

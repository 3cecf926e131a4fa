"""Which process a pid is: its command line and start time (from /proc), so that a
recorded pid is signalled only while it is still the process that was recorded, not
one that got the same number after it died.

``pidfd`` pins a process first: checked through /proc after that, a signal sent
through the pidfd can only reach the process that was checked.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class ProcessIdentity:
    pid: int
    start_time: int          # clock ticks after boot (/proc/PID/stat, field 22)
    cmdline: tuple[str, ...]

    def to_dict(self) -> dict[str, Any]:
        return {"pid": self.pid, "start_time": self.start_time,
                "cmdline": list(self.cmdline)}


def parse_start_time(stat: str) -> int:
    """Field 22 of /proc/PID/stat; the command name (field 2) may hold spaces and
    parentheses, so fields are counted after its last ')'."""
    return int(stat.rpartition(")")[2].split()[19])


def identity(pid: int) -> ProcessIdentity | None:
    """The running process ``pid``, or None if there is none (or it is a zombie)."""
    if pid <= 0:
        return None
    try:
        with open(f"/proc/{pid}/stat") as f:
            stat = f.read()
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            raw = f.read()
    except (OSError, ValueError):
        return None
    after = stat.rpartition(")")[2].split()
    if not after or after[0] in ("Z", "X"):
        return None
    cmdline = tuple(part.decode(errors="replace") for part in raw.split(b"\0")[:-1])
    return ProcessIdentity(pid, parse_start_time(stat), cmdline)


def own_identity() -> ProcessIdentity:
    found = identity(os.getpid())
    assert found is not None  # this process runs
    return found


def matches(recorded: dict[str, Any], found: ProcessIdentity | None) -> bool:
    """Whether ``found`` is the process ``recorded`` (by ``to_dict``) describes: same
    pid, start time and command line. A record without them matches nothing."""
    return found is not None and recorded.get("pid") == found.pid \
        and recorded.get("start_time") == found.start_time \
        and recorded.get("cmdline") == list(found.cmdline)

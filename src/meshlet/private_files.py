"""Files only their owner may read: data directories 0700; the Raft log, snapshots,
logs, state and tokens 0600.

Each is private from the moment it exists: files are created by ``os.open`` with the
mode (never written first and chmod-ed after, which leaves a window), directories by
``os.mkdir`` with theirs (the umask can only take bits away). What an older version
made with wider modes is tightened when it is opened or named again, so a restart
repairs it. A directory shared with others (sticky, as /tmp) is never tightened: what
meshlet keeps in it lives in private directories of its own.
"""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path
from typing import BinaryIO

DIR_MODE = 0o700
FILE_MODE = 0o600
SHARED = 0o077  # the group's and others' bits


def tighten(path: str | Path, limit: int) -> None:
    """Drop group and other bits from ``path`` if it has any (sticky directories
    excepted)."""
    mode = os.stat(path).st_mode
    if mode & SHARED and not mode & stat.S_ISVTX:
        os.chmod(path, stat.S_IMODE(mode) & limit)


def private_dir(path: str | Path) -> Path:
    """``path`` as a directory only its owner may enter, made with any missing parents
    (each 0700); an existing one is tightened. Returns it. Raises OSError."""
    path = Path(path)
    missing = []
    here = path
    while not here.exists():
        missing.append(here)
        if here.parent == here:
            break
        here = here.parent
    for directory in reversed(missing):
        try:
            os.mkdir(directory, DIR_MODE)
        except FileExistsError:
            pass  # made meanwhile; tightened below if it is ours to tighten
    if not path.is_dir():
        raise NotADirectoryError(errno.ENOTDIR, os.strerror(errno.ENOTDIR), str(path))
    tighten(path, DIR_MODE)
    return path


def private_tree(path: str | Path) -> Path:
    """``private_dir``, and every directory and file below it tightened too (what an
    older version wrote 0755/0644); symlinks are not followed."""
    path = private_dir(path)
    for top, dirs, files in os.walk(path):
        for name in dirs + files:
            entry = os.path.join(top, name)
            mode = os.lstat(entry).st_mode
            if stat.S_ISDIR(mode) or stat.S_ISREG(mode):
                tighten(entry, DIR_MODE)
    return path


def open_fd(path: str | Path, flags: int) -> int:
    """``os.open`` creating the file 0600 (an existing one is tightened)."""
    fd = os.open(path, flags | os.O_CLOEXEC, FILE_MODE)
    try:
        mode = os.fstat(fd).st_mode
        if mode & SHARED and stat.S_ISREG(mode):
            os.fchmod(fd, stat.S_IMODE(mode) & DIR_MODE)
    except OSError:
        os.close(fd)
        raise
    return fd


def open_append(path: str | Path) -> BinaryIO:
    """For appending (a log), created 0600."""
    return os.fdopen(open_fd(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND), "ab")


def open_new(path: str | Path) -> BinaryIO:
    """For writing from the start (truncated), created 0600."""
    return os.fdopen(open_fd(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC), "wb")


def write_private(path: str | Path, data: bytes | str) -> None:
    """Replace ``path``'s content with ``data`` (a temp file renamed over it, so a
    reader never sees half of it), 0600 throughout."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    with open_new(tmp) as f:
        f.write(data.encode() if isinstance(data, str) else data)
        f.flush()
        os.fsync(f.fileno())  # a crash leaves the old content or the new, never half
    os.replace(tmp, path)

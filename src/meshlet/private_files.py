"""Files only their owner may read: data directories 0700; the Raft log, snapshots,
logs, state and tokens 0600.

Each is private from the moment it exists: files are created by ``os.open`` with the
mode (never written first and chmod-ed after, which leaves a window), directories by
``os.mkdir`` with theirs (the umask can only take bits away). What an older version
made with wider modes is tightened when it is opened or named again, so a restart
repairs it. A directory shared with others (sticky, as /tmp) is never tightened: what
meshlet keeps in it lives in private directories of its own.

Nothing is adopted from another user, root included: a directory or file that the
effective user does not own is refused (its owner could widen its mode again and read
it, or write entries into it), and so is a directory on the way to it that someone
else could rename things in (owned by another user than root or us, or writable by
others without the sticky bit). Files are opened without following a symlink, and
their owner is checked on the open descriptor, so nothing can be swapped in between.

Every file meshlet writes whole (state, tokens, keys, certificates) goes through
``write_private``: a temp file, fsynced, renamed over the old one, the directory fsynced,
so a crash leaves the old content or the new, never half. Secrets (tokens) are one line
of text: ``write_secret`` / ``read_secret``.
"""

from __future__ import annotations

import errno
import os
import pwd
import stat
from pathlib import Path
from typing import BinaryIO

from meshlet.errors import StorageError

DIR_MODE = 0o700
FILE_MODE = 0o600
SHARED = 0o077  # the group's and others' bits


def tighten(path: str | Path, limit: int) -> None:
    """Drop group and other bits from ``path`` if it has any (sticky directories
    excepted)."""
    mode = os.stat(path).st_mode
    if mode & SHARED and not mode & stat.S_ISVTX:
        os.chmod(path, stat.S_IMODE(mode) & limit)


def user_name(uid: int) -> str:
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return str(uid)


def check_owner(path: str | Path, info: os.stat_result, what: str) -> None:
    """Raise StorageError unless the effective user owns ``path`` (whose ``info``)."""
    me = os.geteuid()
    if info.st_uid != me:
        raise StorageError(
            f"refusing {what} {path}: it is owned by {user_name(info.st_uid)} "
            f"(uid {info.st_uid}), not by {user_name(me)}; remove it, or give it to "
            f"{user_name(me)} if its content is to be trusted")


def check_on_the_way(directory: Path) -> None:
    """Raise StorageError if someone other than root or us could rename what is in
    ``directory`` (a sticky one shared by all, as /tmp, is fine)."""
    info = os.stat(directory)
    if info.st_uid not in (0, os.geteuid()):
        check_owner(directory, info, "directory")
    if info.st_mode & 0o022 and not info.st_mode & stat.S_ISVTX:
        raise StorageError(
            f"refusing directory {directory}: others may write in it "
            f"(mode {stat.S_IMODE(info.st_mode):04o}) and could swap what meshlet keeps "
            "there; make it 0755 or give it the sticky bit")


def private_dir(path: str | Path) -> Path:
    """``path`` as a directory only its owner may enter, made with any missing parents
    (each 0700); an existing one is tightened. Returns it. Raises StorageError for one
    that another user owns or could swap, OSError otherwise."""
    path = Path(path)
    real = Path(os.path.realpath(path))
    existing = real
    while not existing.exists() and existing.parent != existing:
        existing = existing.parent
    for directory in reversed([existing, *existing.parents]):
        if directory != real:
            check_on_the_way(directory)
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
            pass  # made meanwhile; checked below like any existing one
    try:
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except NotADirectoryError:
        raise NotADirectoryError(errno.ENOTDIR, os.strerror(errno.ENOTDIR), str(path)) from None
    try:
        info = os.fstat(fd)
        if info.st_mode & stat.S_ISVTX:
            check_on_the_way(path)  # shared, never tightened; its owner still matters
        else:
            check_owner(path, info, "directory")
            if info.st_mode & SHARED:
                os.fchmod(fd, stat.S_IMODE(info.st_mode) & DIR_MODE)
    finally:
        os.close(fd)
    return path


def private_tree(path: str | Path) -> Path:
    """``private_dir``, and every directory and file below it tightened too (what an
    older version wrote 0755/0644). Raises StorageError for anything below that another
    user owns, or a symlink (meshlet makes none; one could send the reads and the
    truncation of a torn log's recovery to a file elsewhere)."""
    path = private_dir(path)
    for top, dirs, files in os.walk(path):
        for name in dirs + files:
            entry = os.path.join(top, name)
            info = os.lstat(entry)
            if stat.S_ISLNK(info.st_mode):
                raise StorageError(f"refusing {entry}: a symbolic link in a data directory "
                                   f"(to {os.readlink(entry)}); remove it")
            if stat.S_ISDIR(info.st_mode) or stat.S_ISREG(info.st_mode):
                check_owner(entry, info, "directory" if stat.S_ISDIR(info.st_mode) else "file")
                tighten(entry, DIR_MODE)
    return path


def open_fd(path: str | Path, flags: int) -> int:
    """``os.open`` creating the file 0600 (an existing one is tightened). Raises
    StorageError for a symlink, or a file that is not a regular one or not ours: it
    is refused before anything in it changes (``O_TRUNC`` waits until it is checked)."""
    try:
        fd = os.open(path, (flags & ~os.O_TRUNC) | os.O_CLOEXEC | os.O_NOFOLLOW, FILE_MODE)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise StorageError(f"refusing file {path}: it is a symbolic link") from None
        if exc.errno == errno.EISDIR:
            raise StorageError(f"refusing file {path}: it is not a regular file") from None
        raise
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise StorageError(f"refusing file {path}: it is not a regular file")
        check_owner(path, info, "file")
        if info.st_mode & SHARED:
            os.fchmod(fd, stat.S_IMODE(info.st_mode) & DIR_MODE)
        if flags & os.O_TRUNC:
            os.ftruncate(fd, 0)
    except BaseException:
        os.close(fd)
        raise
    return fd


def open_append(path: str | Path) -> BinaryIO:
    """For appending (a log), created 0600."""
    return os.fdopen(open_fd(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND), "ab")


def open_new(path: str | Path) -> BinaryIO:
    """For writing from the start (truncated), created 0600."""
    return os.fdopen(open_fd(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC), "wb")


def fsync_dir(path: str | Path) -> None:
    """Make the names in directory ``path`` (a file made, renamed or removed) durable."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_private(path: str | Path, data: bytes | str) -> None:
    """Replace ``path``'s content with ``data`` (a temp file renamed over it, so a
    reader never sees half of it), 0600 throughout. Raises StorageError (the temp file
    is a symlink or not ours), OSError."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    with open_new(tmp) as f:
        f.write(data.encode() if isinstance(data, str) else data)
        f.flush()
        os.fsync(f.fileno())  # a crash leaves the old content or the new, never half
    os.replace(tmp, path)
    fsync_dir(path.parent)  # and the rename survives it


def new_secret() -> str:
    """A fresh random secret: 32 bytes, URL-safe text."""
    import secrets  # here: a sidecar, which writes files here too, makes none
    return secrets.token_urlsafe(32)


def write_secret(path: Path, secret: str) -> None:
    """Write ``secret`` as one line to ``path`` (``write_private``), its directory made
    0700 if missing. Raises StorageError, OSError."""
    private_dir(path.parent)
    write_private(path, secret + "\n")


def read_secret(path: Path) -> str | None:
    """The secret in ``path``, or None if there is none; raises PermissionError when
    the file is someone else's."""
    try:
        text = path.read_text().strip()
    except (FileNotFoundError, NotADirectoryError):
        return None
    return text or None


def read_or_create_secret(path: Path) -> str:
    """The secret kept in ``path``, made and written first if there is none."""
    found = read_secret(path)
    if found is not None:
        return found
    secret = new_secret()
    write_secret(path, secret)
    return secret

"""Secrets on disk: written whole or not at all, readable by their owner only.

A secret is written to a temporary file created 0600 (never a moment wider), fsynced,
then renamed over the target and the directory fsynced, so a crash leaves the old
secret or the new one, never half of one.
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path


def new_secret() -> str:
    """A fresh random secret: 32 bytes, URL-safe text."""
    return secrets.token_urlsafe(32)


def write_secret(path: Path, secret: str) -> None:
    """Write ``secret`` to ``path`` atomically, mode 0600; raises OSError."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
    try:
        os.fchmod(fd, 0o600)  # whatever the umask
        os.write(fd, secret.encode() + b"\n")
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


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

"""The sidecar's admin socket, which only its owner may use: created 0600, never wider
for a moment, in a directory that no one else can write (else they could swap the
socket for their own). Other private files are ``meshlet/private_files.py``'s.
"""

from __future__ import annotations

import contextlib
import errno
import os
import socket
import stat

PRIVATE = 0o600
MAX_SOCKET_PATH = 107  # bytes in sockaddr_un.sun_path, less the terminating NUL


def socket_address(path: str) -> tuple[str, int | None]:
    """An address ``bind`` and ``connect`` take for the Unix socket at ``path``: the path
    itself, or, when it is longer than a socket address may be, the same file through a
    handle on its directory (``/proc/self/fd/N/NAME``). The caller closes the handle
    (the int, if any) once it no longer needs the address. Raises OSError."""
    if len(os.fsencode(path)) <= MAX_SOCKET_PATH:
        return path, None
    directory, name = os.path.split(os.path.abspath(path))
    fd = os.open(directory, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    return f"/proc/self/fd/{fd}/{name}", fd


def check_private_dir(path: str, what: str) -> None:
    """Raise OSError unless ``path`` is in a directory that we own and only we can
    write (one of another user's, root's included, could have the socket swapped)."""
    directory = os.path.dirname(os.path.abspath(path))
    info = os.stat(directory)  # FileNotFoundError names it
    if not stat.S_ISDIR(info.st_mode):
        raise NotADirectoryError(f"{directory} is not a directory")
    if info.st_uid != os.geteuid():
        raise PermissionError(
            f"{what} {path}: directory {directory} is owned by uid {info.st_uid}, "
            f"not by this user (uid {os.geteuid()}); use a directory of your own")
    if info.st_mode & 0o022:
        raise PermissionError(
            f"{what} {path}: directory {directory} is writable by others "
            f"(mode {stat.S_IMODE(info.st_mode):04o}); make it 0700")


def private_unix_socket(path: str) -> socket.socket:
    """A Unix socket bound at ``path`` with mode 0600 from the start: the mode is set on
    the socket before ``bind`` creates the file (Linux takes it from there, and the
    umask can only narrow it). A stale file at ``path`` is replaced, but not a socket
    that another process still listens on. Raises OSError."""
    check_private_dir(path, "admin socket")
    address, handle = socket_address(path)
    try:
        return bind_private(path, address)
    finally:
        if handle is not None:
            os.close(handle)


def bind_private(path: str, address: str) -> socket.socket:
    if listening(address):
        raise OSError(errno.EADDRINUSE, "another process listens on that socket")
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        os.fchmod(sock.fileno(), PRIVATE)
        sock.bind(address)
        mode = stat.S_IMODE(os.lstat(path).st_mode)
        if mode & ~PRIVATE:  # a kernel that ignored the socket's mode: refuse
            os.unlink(path)
            raise PermissionError(f"admin socket {path} was created with mode {mode:04o}")
        sock.setblocking(False)
    except BaseException:
        sock.close()
        raise
    return sock


def listening(address: str) -> bool:
    """Whether a process accepts connections on the Unix socket at ``address``."""
    try:
        if not stat.S_ISSOCK(os.stat(address).st_mode):
            return False
    except FileNotFoundError:
        return False
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
        probe.settimeout(1.0)
        try:
            probe.connect(address)
        except OSError:  # ECONNREFUSED: left by a process that is gone
            return False
    return True

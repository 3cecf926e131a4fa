"""Named network namespaces, as `ip netns` keeps them (/run/netns/NAME), so that
`ip netns exec NAME …` and `meshlet exec` work on them. meshlet's start with ``ml-``,
which is how cleanup after a crash finds them.

They are made and removed with `ip netns`, which does the mount dance, and entered
per thread with setns(2) (``inside``), never by forking: the agent is a threaded
asyncio process, and a stray signal from a forked helper could reach it.
"""

from __future__ import annotations

import contextlib
import ctypes
import fcntl
import os
import stat
import subprocess
from collections.abc import Iterator
from pathlib import Path

from meshlet.errors import MeshletError

PREFIX = "ml-"
RUN_DIR = Path("/run/netns")
RESOLV_DIR = Path("/etc/netns")
CLONE_NEWNET = 0x40000000
NS_GET_NSTYPE = 0xB703  # ioctl: which kind of namespace a file is (Linux 4.11)
_libc = ctypes.CDLL(None, use_errno=True)


CAP_NET_ADMIN, CAP_SYS_ADMIN = 12, 21


def can_manage() -> bool:
    """Whether this process may make namespaces and links: root's CAP_NET_ADMIN and
    CAP_SYS_ADMIN (checked, not assumed from the user id: a root without them, as in
    some containers, cannot either)."""
    try:
        status = Path("/proc/self/status").read_text()
    except OSError:
        return os.geteuid() == 0
    line = next((x for x in status.splitlines() if x.startswith("CapEff:")), "")
    caps = int(line.split()[1], 16) if line else 0
    return all(caps >> bit & 1 for bit in (CAP_NET_ADMIN, CAP_SYS_ADMIN))


def require_root(what: str) -> None:
    if not can_manage():
        raise MeshletError(f"{what} needs root (network namespaces and links); without "
                           "it only host networking is available")


def ip(*args: str) -> None:
    """Run `ip ARGS`; raises MeshletError with its message."""
    done = subprocess.run(["ip", *args], capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise MeshletError(f"ip {' '.join(args)}: {done.stderr.strip()}")


def exists(name: str) -> bool:
    return (RUN_DIR / name).exists()


def create(name: str) -> None:
    """Create the namespace with its loopback up; an existing one is reused."""
    if not exists(name):
        ip("netns", "add", name)
    ip("-n", name, "link", "set", "lo", "up")


def remove(name: str) -> None:
    """Delete the namespace and its resolver directory; absent is fine."""
    if exists(name):
        ip("netns", "delete", name)
    resolv = RESOLV_DIR / name / "resolv.conf"
    resolv.unlink(missing_ok=True)
    if resolv.parent.exists():
        resolv.parent.rmdir()


def add_loopback_addresses(name: str, addresses: list[str]) -> None:
    """``addresses`` as /32s on the namespace's loopback (present ones are kept)."""
    for address in addresses:
        done = subprocess.run(["ip", "-n", name, "addr", "add", f"{address}/32", "dev", "lo"],
                              capture_output=True, text=True, check=False)
        if done.returncode != 0 and "File exists" not in done.stderr:
            raise MeshletError(f"adding {address} in {name}: {done.stderr.strip()}")


def ours() -> list[str]:
    if not RUN_DIR.exists():
        return []
    return sorted(p.name for p in RUN_DIR.iterdir() if p.name.startswith(PREFIX))


def path_of(name: str) -> Path:
    """A namespace by name (in /run/netns) or by path (as CNI gives it)."""
    return Path(name) if name.startswith("/") else RUN_DIR / name


NamespaceId = tuple[int, int]  # (device, inode): the same whatever path names it


def network_namespace_id(path: str | Path) -> NamespaceId | None:
    """Which network namespace the file at ``path`` is; None if it is no network
    namespace (a plain file, another kind of namespace). Raises OSError (e.g.
    FileNotFoundError)."""
    if not stat.S_ISREG(os.stat(path).st_mode):  # nsfs files are; a FIFO or device is not
        return None
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NONBLOCK)
    try:
        try:
            kind = fcntl.ioctl(fd, NS_GET_NSTYPE)
        except OSError:  # ENOTTY: not a namespace file
            return None
        if kind != CLONE_NEWNET:
            return None
        st = os.fstat(fd)
        return st.st_dev, st.st_ino
    finally:
        os.close(fd)


def host_namespace_ids() -> set[NamespaceId]:
    """The host's network namespace (init's) and this process's own, as far as this
    process may see them."""
    found = set()
    for path in ("/proc/1/ns/net", "/proc/self/ns/net"):
        try:
            st = os.stat(path)
        except OSError:
            continue
        found.add((st.st_dev, st.st_ino))
    return found


def _setns(fd: int) -> None:
    if _libc.setns(fd, CLONE_NEWNET) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"setns: {os.strerror(err)}")


@contextlib.contextmanager
def inside(name: str) -> Iterator[None]:
    """Move the calling thread into namespace ``name`` (a name or a path) for the
    block, then back. Use
    from a thread of its own (e.g. asyncio.to_thread), never the event loop's."""
    home = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
    target = os.open(path_of(name), os.O_RDONLY)
    try:
        _setns(target)
        try:
            yield
        finally:
            _setns(home)
    finally:
        os.close(target)
        os.close(home)

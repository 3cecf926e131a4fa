"""A container's root filesystem: the image's layers, read-only and shared, under an
overlay with a writable layer of its own (``upper``), mounted at ``rootfs`` in the
container's directory. Unmounting is idempotent, and what a crashed agent left
mounted is found again from /proc/self/mountinfo."""

from __future__ import annotations

import ctypes
import errno
import os
from collections.abc import Sequence
from pathlib import Path

from meshlet.errors import MeshletError
from meshlet.private_files import private_dir

MNT_DETACH = 2
MAX_OPTIONS = 4000  # the kernel reads at most a page of mount options
_libc = ctypes.CDLL(None, use_errno=True)


def _check(result: int, what: str) -> None:
    if result != 0:
        code = ctypes.get_errno()
        raise OSError(code, f"{what}: {os.strerror(code)}")


def mount_overlay(layers: Sequence[Path], container_dir: Path) -> Path:
    """Mount ``layers`` (bottom first) with a writable layer at
    ``container_dir/rootfs``; return it. Mounted already: return it as it is."""
    if not layers:
        raise MeshletError("an image needs at least one layer")
    merged, upper, work = (container_dir / d for d in ("rootfs", "upper", "work"))
    for d in (container_dir, work):
        private_dir(d)
    for d in (upper, merged):  # the root of the merged tree takes upper's mode
        d.mkdir(mode=0o755, exist_ok=True)
        os.chmod(d, 0o755)
    if str(merged) in mounts_under(container_dir):
        return merged
    lower = ":".join(str(p) for p in reversed(layers))
    options = f"lowerdir={lower},upperdir={upper},workdir={work}"
    if len(options) > MAX_OPTIONS:
        raise MeshletError(f"an image of {len(layers)} layers is too deep to mount here "
                           "(the overlay's options exceed a page)")
    _check(_libc.mount(b"overlay", str(merged).encode(), b"overlay", 0,
                       options.encode()), f"mounting the rootfs at {merged}")
    return merged


def unmount(path: Path) -> None:
    """Detach the mount at ``path``; not mounted (or absent) is fine."""
    if _libc.umount2(str(path).encode(), MNT_DETACH) != 0:
        code = ctypes.get_errno()
        if code not in (errno.EINVAL, errno.ENOENT):
            raise OSError(code, f"unmounting {path}: {os.strerror(code)}")


def _unescape(field: str) -> str:
    """mountinfo writes space, tab, newline and backslash as octal escapes."""
    for code in ("040", "011", "012", "134"):
        field = field.replace("\\" + code, chr(int(code, 8)))
    return field


def mounts_under(directory: Path) -> list[str]:
    """Mount points at or below ``directory``, deepest first."""
    base = os.path.realpath(directory)
    found = []
    with open("/proc/self/mountinfo", encoding="utf-8", errors="replace") as f:
        for line in f:
            fields = line.split(" ")
            if len(fields) > 4:
                point = _unescape(fields[4])
                if point == base or point.startswith(base + "/"):
                    found.append(point)
    return sorted(set(found), key=len, reverse=True)


def overlay_lowers() -> set[str]:
    """Every directory a mounted overlay reads as a lower layer (a layer in use)."""
    found: set[str] = set()
    with open("/proc/self/mountinfo", encoding="utf-8", errors="replace") as f:
        for line in f:
            _, sep, tail = line.partition(" - ")
            fields = tail.split(" ")
            if sep and fields[0] == "overlay" and len(fields) > 2:
                for option in fields[2].strip().split(","):
                    if option.startswith("lowerdir="):
                        found.update(os.path.realpath(d)
                                     for d in _unescape(option[9:]).split(":"))
    return found


def unmount_all(directory: Path) -> list[str]:
    """Unmount everything mounted below ``directory`` (what an agent killed with -9
    left); return what was unmounted."""
    found = mounts_under(directory)
    for point in found:
        unmount(Path(point))
    return found

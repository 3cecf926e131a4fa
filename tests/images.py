"""Tiny test images built from Debian's busybox-static: a rootfs tarball with the
busybox binary, a symlink per applet, and the files a container expects."""

from __future__ import annotations

import io
import shutil
import subprocess
import tarfile
import time
from pathlib import Path

BUSYBOX = shutil.which("busybox") or "/usr/bin/busybox"
PASSWD = "root:x:0:0:root:/root:/bin/sh\nweb:x:1000:1000:web:/home/web:/bin/sh\n" \
         "nobody:x:65534:65534:nobody:/nonexistent:/bin/false\n"
GROUP = "root:x:0:\nweb:x:1000:\nstaff:x:50:web\nnogroup:x:65534:\n"


def have_busybox() -> bool:
    """True if the busybox here is static (a rootfs with only it in it runs)."""
    try:
        out = subprocess.run(["file", "-L", BUSYBOX], capture_output=True, text=True,
                             timeout=10, check=False).stdout
    except (OSError, subprocess.TimeoutExpired):
        out = ""
    if out:
        return "statically linked" in out or "static-pie" in out
    return Path(BUSYBOX).exists()


def applets() -> list[str]:
    out = subprocess.run([BUSYBOX, "--list"], capture_output=True, text=True,
                         check=True, timeout=10).stdout
    return [a for a in out.split() if a and "/" not in a and a != "busybox"]


def _add(tar: tarfile.TarFile, name: str, data: bytes = b"", mode: int = 0o644,
         kind: bytes = tarfile.REGTYPE, link: str = "", uid: int = 0) -> None:
    info = tarfile.TarInfo(name)
    info.type, info.mode, info.mtime, info.uid, info.gid = kind, mode, int(time.time()), \
        uid, uid
    info.linkname = link
    info.size = len(data) if kind == tarfile.REGTYPE else 0
    tar.addfile(info, io.BytesIO(data) if kind == tarfile.REGTYPE else None)


def busybox_rootfs(path: Path, extra: dict[str, bytes] | None = None) -> Path:
    """Write a rootfs tarball to ``path``: /bin/busybox and its applets, /etc/passwd,
    /etc/group, a web root at /www and any ``extra`` files (name -> content)."""
    binary = Path(BUSYBOX).read_bytes()
    with tarfile.open(path, "w") as tar:
        for d in ("bin", "etc", "tmp", "www", "root", "home", "home/web", "proc",
                  "sys", "dev"):
            _add(tar, d, kind=tarfile.DIRTYPE, mode=0o1777 if d == "tmp" else 0o755)
        _add(tar, "bin/busybox", binary, mode=0o755)
        for applet in applets():
            _add(tar, f"bin/{applet}", kind=tarfile.SYMTYPE, link="busybox")
        _add(tar, "etc/passwd", PASSWD.encode())
        _add(tar, "etc/group", GROUP.encode())
        _add(tar, "www/index.html", b"hello from busybox\n")
        for name, content in (extra or {}).items():
            _add(tar, name, content)
    return path

"""Layer tarballs, checked member by member, and extracted safely for overlayfs.

A layer comes from a file anyone could have made, and is extracted by root: every
member name is relative and stays inside the layer (no ``/x``, no ``..``, at most 4096
bytes); devices and fifos are refused (a layer has no business making them, and the
only ones meshlet makes are whiteouts); a member is never written through a symbolic
link that leads outside the layer (``os.path.realpath`` of where it goes is checked
just before it is written, after every earlier member exists), nor hard-linked to a
file outside it; what an earlier member put at a path is replaced, not written
through. Owners stay numeric and modes stay whole (setuid included): tarfile's
``data`` and ``tar`` filters would strip them, so the filter here is our own.

OCI whiteouts become overlayfs ones: ``.wh.NAME`` is a 0:0 character device ``NAME``,
``.wh..wh..opq`` in a directory sets ``trusted.overlay.opaque=y`` on it. Both need
root (CAP_MKNOD, CAP_SYS_ADMIN).

``scan`` runs the checks that need no file system while a layer is imported, so a
hostile layer is refused before it is stored; ``extract`` runs all of them.
"""

from __future__ import annotations

import os
import posixpath
import shutil
import stat
import tarfile
from pathlib import Path
from typing import IO

from meshlet.errors import ConfigError, MeshletError

MAX_NAME_BYTES = 4096
WHITEOUT = ".wh."
OPAQUE = ".wh..wh..opq"
OPAQUE_XATTR = "trusted.overlay.opaque"


def clean_name(name: str, what: str) -> str:
    """``name`` as a relative path without ``.`` or empty components (``""`` for the
    archive's root). Raises ConfigError for a name that is absolute, climbs out with
    ``..``, holds a NUL or is longer than 4096 bytes."""
    size = len(name.encode("utf-8", "surrogateescape"))
    if size > MAX_NAME_BYTES:
        raise ConfigError(f"{what}: a member name is {size} bytes long; at most "
                          f"{MAX_NAME_BYTES} are allowed", "file")
    if "\0" in name:
        raise ConfigError(f"{what}: member name {name[:80]!r} holds a NUL", "file")
    if name.startswith("/"):
        raise ConfigError(f"{what}: member {name[:200]!r} has an absolute name", "file")
    parts = [p for p in name.split("/") if p not in ("", ".")]
    if ".." in parts:
        raise ConfigError(f"{what}: member {name[:200]!r} climbs out of the archive "
                          "with '..'", "file")
    return "/".join(parts)


def check_member(member: tarfile.TarInfo, what: str) -> str:
    """The member's clean name; raises ConfigError for a name ``clean_name`` refuses,
    a device, a fifo, an unknown type or a hard link that leaves the archive."""
    name = clean_name(member.name, what)
    if member.ischr() or member.isblk() or member.isfifo():
        kind = "fifo" if member.isfifo() else "device"
        raise ConfigError(f"{what}: member {name!r} is a {kind}; layers may not make "
                          "devices or fifos", "file")
    if not (member.isreg() or member.isdir() or member.issym() or member.islnk()):
        raise ConfigError(f"{what}: member {name!r} has an unsupported type "
                          f"{member.type!r}", "file")
    if member.islnk():
        target = clean_name(member.linkname, what)
        if not target:
            raise ConfigError(f"{what}: hard link {name!r} points at the archive's root",
                              "file")
    elif member.issym() and (
            len(member.linkname.encode("utf-8", "surrogateescape")) > MAX_NAME_BYTES
            or "\0" in member.linkname):
        raise ConfigError(f"{what}: symbolic link {name!r} has a target too long "
                              "or with a NUL", "file")
    return name


def _leaves(link: str, target: str) -> bool:
    """Whether symlink ``link`` (a clean name) to ``target`` leads out of the root,
    read lexically."""
    if target.startswith("/"):
        return True
    resolved = posixpath.normpath(posixpath.join(posixpath.dirname(link), target))
    return resolved == ".." or resolved.startswith("../")


def _through_links(name: str, links: dict[str, str], what: str,
                   proper: bool = True) -> None:
    """Refuse ``name`` if a directory on its way (or, unless ``proper``, itself) is a
    symbolic link of this layer that leads outside it."""
    parts = name.split("/")
    for i in range(1, len(parts) + (0 if proper else 1)):
        prefix = "/".join(parts[:i])
        if prefix in links and _leaves(prefix, links[prefix]):
            raise ConfigError(f"{what}: member {name!r} would go through the symbolic "
                              f"link {prefix!r} -> {links[prefix]!r}, out of the layer",
                              "file")


def scan(members: IO[bytes], what: str) -> int:
    """Read the tar stream ``members`` to its end, checking each member (and that
    none goes through a symbolic link of this layer that leads outside it). Returns
    the member count; raises ConfigError."""
    links: dict[str, str] = {}
    count = 0
    try:
        with tarfile.open(fileobj=members, mode="r|") as tar:
            for member in tar:
                count += 1
                name = check_member(member, what)
                _through_links(name, links, what)
                if member.islnk():
                    _through_links(clean_name(member.linkname, what), links, what,
                                   proper=False)
                if member.issym():
                    links[name] = member.linkname
                else:
                    links.pop(name, None)
    except tarfile.TarError as exc:
        raise ConfigError(f"{what}: not a tar archive ({exc})", "file") from None
    return count


def _inside(path: str, root: str) -> bool:
    return path == root or path.startswith(root.rstrip("/") + "/")


class _Extraction:
    """The filter ``tarfile.extractall`` calls before each member (so every earlier
    member is on disk when a later one's path is checked), and what it leaves for
    after: whiteouts, opaque directories, the root's own attributes."""

    def __init__(self, dest: Path, what: str) -> None:
        self.dest = str(dest)
        self.real = os.path.realpath(dest)
        self.what = what
        self.whiteouts: list[str] = []
        self.opaque: list[str] = []
        self.root: tarfile.TarInfo | None = None

    def check_path(self, name: str, path: str) -> None:
        real = os.path.realpath(path)
        if not _inside(real, self.real):
            raise MeshletError(f"{self.what}: member {name!r} would be written through "
                               f"a symbolic link, to {real}, outside the layer")

    def __call__(self, member: tarfile.TarInfo, _dest: str) -> tarfile.TarInfo | None:
        name = check_member(member, self.what)
        if not name:
            self.root = member
            return None
        parent, base = posixpath.split(name)
        if base == OPAQUE:
            self.opaque.append(parent)
            return None
        if base.startswith(WHITEOUT + WHITEOUT):
            return None  # aufs bookkeeping (.wh..wh.plnk, .wh..wh.aufs): not content
        if base.startswith(WHITEOUT):
            if not base[len(WHITEOUT):]:
                raise ConfigError(f"{self.what}: whiteout {name!r} names nothing", "file")
            self.whiteouts.append(posixpath.join(parent, base[len(WHITEOUT):]))
            return None
        target = os.path.join(self.dest, name)
        self.check_path(name, os.path.dirname(target))
        if os.path.islink(target) or (os.path.lexists(target) and not member.isdir()):
            if os.path.isdir(target) and not os.path.islink(target):
                shutil.rmtree(target)
            else:
                os.unlink(target)  # replaced, never written through
        if member.islnk():
            source = clean_name(member.linkname, self.what)
            self.check_path(name, os.path.join(self.dest, source))
            return member.replace(name=name, linkname=source, deep=False)
        return member.replace(name=name, deep=False)

    def set_directory_attributes(self, member: tarfile.TarInfo) -> None:
        """Owner, mode and time of a directory member, set once every member is
        written, and only on the directory itself: if what is at its path now is not
        that directory (a later member replaced it, or a directory on its way, with
        a link), it is left alone."""
        path = os.path.join(self.dest, member.name)
        if os.path.realpath(path) != os.path.join(self.real, member.name):
            return
        try:
            fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
        except OSError:
            return  # not a directory any more
        try:
            if os.geteuid() == 0:
                os.fchown(fd, member.uid, member.gid)
            os.utime(fd, (member.mtime, member.mtime))
            os.fchmod(fd, stat.S_IMODE(member.mode))
        finally:
            os.close(fd)

    def finish(self) -> None:
        for name in self.whiteouts:
            path = os.path.join(self.dest, name)
            self.check_path(name, os.path.dirname(path))
            if os.path.lexists(path):
                raise ConfigError(f"{self.what}: {name!r} is both in the layer and "
                                  "whited out by it", "file")
            os.mknod(path, stat.S_IFCHR, os.makedev(0, 0))
            os.lchown(path, 0, 0)
        for name in self.opaque:
            path = os.path.join(self.dest, name) if name else self.dest
            self.check_path(name or ".", path)
            os.makedirs(path, 0o755, exist_ok=True)
            os.setxattr(path, OPAQUE_XATTR, b"y", follow_symlinks=False)
        if self.root is not None:
            if os.geteuid() == 0:
                os.chown(self.dest, self.root.uid, self.root.gid)
            os.chmod(self.dest, stat.S_IMODE(self.root.mode))


def _as_is(member: tarfile.TarInfo, _dest: str) -> tarfile.TarInfo:
    """The filter ``extract`` is given for a member ``_Extraction`` has already
    checked and renamed (without one, Python 3.14 would apply its ``data`` filter)."""
    return member


def extract(blob: Path, dest: Path, what: str) -> None:
    """Extract the layer tarball ``blob`` into the empty directory ``dest``. Raises
    ConfigError / MeshletError for a member the checks refuse (``dest`` is then half
    made: the caller removes it), MeshletError (whiteouts without root), OSError."""
    extraction = _Extraction(dest, what)
    directories: list[tarfile.TarInfo] = []
    try:
        with tarfile.open(blob, mode="r:") as tar:
            # Not ``extractall``: it sets the directories' owner, mode and time at the
            # end through their paths, following a symbolic link that a later member
            # put where a directory was (``d/`` then ``d -> /etc`` would chown /etc).
            for member in tar:
                kept = extraction(member, str(dest))
                if kept is None:
                    continue
                if kept.isdir():
                    directories.append(kept)
                tar.extract(kept, dest, set_attrs=not kept.isdir(), numeric_owner=True,
                            filter=_as_is)
    except tarfile.TarError as exc:
        raise ConfigError(f"{what}: not a tar archive ({exc})", "file") from None
    for directory in sorted(directories, key=lambda d: d.name, reverse=True):
        extraction.set_directory_attributes(directory)
    if (extraction.whiteouts or extraction.opaque) and os.geteuid() != 0:
        raise MeshletError(f"{what}: has whiteouts; making them (character devices, "
                           "trusted.* extended attributes) needs root")
    extraction.finish()

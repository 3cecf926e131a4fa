"""The image store: content-addressed layers and configs under the agent's data dir.

Layout of ``root`` (``<agent data dir>/images``; directories 0700, files 0600, all
through ``meshlet.private_files``)::

    lock                    flock: exclusive to write, shared to read layers
    repositories.json       {"tags": {"name:tag": image id},
                             "images": {image id: {"imported": ISO time}}}
    blobs/sha256/<hex>      a layer as an uncompressed tar, named by its diff id (so a
                            layer two images share is stored once), or an image
                            config, named by its digest (the image id's hex)
    layers/<hex>/           a layer extracted for overlayfs, made on first use
    tmp/                    imports and extractions under way (each holds an flock on
                            its own directory; one whose flock is free is a crash's
                            leftover and is removed)

An import reads and verifies the whole file into ``tmp`` first (``archive``), then,
under the lock, renames the layers into ``blobs`` and writes the config and
``repositories.json``: a refused file leaves the store as it was. The same content
imported under another tag is the same image with one more tag. A tag moved to
another image leaves the old image in the store, untagged (``<none>`` in ``ls``, as
Docker's dangling images), until ``remove`` is given its id.

``layer_dirs`` re-hashes every layer blob before handing out the directories: a blob
that rotted or was edited is refused, never mounted.
"""

from __future__ import annotations

import contextlib
import datetime
import errno
import fcntl
import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from meshlet import json_limits
from meshlet.errors import ConfigError, Conflict, MeshletError, NotFound, StorageError
from meshlet.image import layer_tar
from meshlet.image.archive import CHUNK, read_archive
from meshlet.image.config import ImageConfig
from meshlet.image.reference import parse_lookup, parse_reference, short_id
from meshlet.private_files import fsync_dir, open_fd, private_dir, write_private

REPOSITORIES_MAX_BYTES = 16 * 1024 * 1024


@dataclass(frozen=True)
class Image:
    """An image in the store. ``diff_ids`` are its layers bottom to top; ``size`` is
    their uncompressed bytes; ``created`` is the config's time, else the import's."""

    id: str
    tags: list[str]
    config: ImageConfig
    diff_ids: tuple[str, ...]
    size: int
    created: str

    @property
    def name(self) -> str:
        """How messages name it: its first tag, else its short id."""
        return self.tags[0] if self.tags else short_id(self.id)


def used_by(containers: Iterable[dict[str, Any]], image: Image) -> list[str]:
    """Names of the containers whose record runs ``image``."""
    return [str(c.get("name")) for c in containers if c.get("image_id") == image.id]


def _hex(digest: str) -> str:
    return digest.removeprefix("sha256:")


def _now() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def file_digest(path: Path) -> str:
    """``sha256:<hex>`` of the file at ``path``, streamed."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(CHUNK):
            h.update(chunk)
    return f"sha256:{h.hexdigest()}"


class ImageStore:
    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.blobs = self.root / "blobs" / "sha256"
        self.layers = self.root / "layers"
        self.tmp = self.root / "tmp"
        self.repositories = self.root / "repositories.json"

    def __repr__(self) -> str:
        return f"ImageStore({str(self.root)!r})"

    # -- locking and scratch space ---------------------------------------------------

    def _ensure(self) -> None:
        for directory in (self.root, self.root / "blobs", self.blobs, self.layers, self.tmp):
            private_dir(directory)

    @contextlib.contextmanager
    def _lock(self, exclusive: bool = True) -> Iterator[None]:
        fd = open_fd(self.root / "lock", os.O_RDWR | os.O_CREAT)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH)
            yield
        finally:
            os.close(fd)

    @contextlib.contextmanager
    def _scratch(self, prefix: str) -> Iterator[Path]:
        """A private directory in ``tmp`` held (flock) for as long as it is used, and
        removed after. Made under the shared lock, so a cleaner (exclusive) never sees
        it made but not yet held."""
        with self._lock(exclusive=False):
            path = Path(tempfile.mkdtemp(prefix=prefix, dir=self.tmp))
            fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
            fcntl.flock(fd, fcntl.LOCK_EX)
        try:
            yield path
        finally:
            shutil.rmtree(path, ignore_errors=True)
            os.close(fd)

    def _clean_locked(self) -> None:
        """Remove what crashed imports and extractions left in ``tmp``."""
        for entry in os.scandir(self.tmp):
            try:
                fd = os.open(entry.path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC
                             | os.O_NOFOLLOW)
            except OSError:
                with contextlib.suppress(OSError):
                    os.unlink(entry.path)
                continue
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                continue  # in use
            finally:
                os.close(fd)
            shutil.rmtree(entry.path, ignore_errors=True)

    # -- the index -------------------------------------------------------------------

    def _read(self) -> dict[str, dict[str, Any]]:
        try:
            raw = self.repositories.read_bytes()
        except FileNotFoundError:
            return {"tags": {}, "images": {}}
        data = json_limits.loads(raw, str(self.repositories), REPOSITORIES_MAX_BYTES)
        if not (isinstance(data, dict) and isinstance(data.get("tags"), dict)
                and isinstance(data.get("images"), dict)):
            raise StorageError(f"{self.repositories} is corrupt: expected tags and images")
        return data

    def _write_locked(self, data: dict[str, dict[str, Any]]) -> None:
        write_private(self.repositories, json.dumps(data, indent=1,
                                           sort_keys=True))

    def _config(self, image_id: str) -> dict[str, Any]:
        blob = self.blobs / _hex(image_id)
        try:
            raw = blob.read_bytes()
        except FileNotFoundError:
            raise StorageError(f"image {short_id(image_id)}: its config {blob} is "
                               "missing") from None
        got = f"sha256:{hashlib.sha256(raw).hexdigest()}"
        if got != image_id:
            raise StorageError(f"image {short_id(image_id)}: its config is corrupt "
                               f"(its content is {got})")
        config = json_limits.loads(raw, str(blob))
        assert isinstance(config, dict), "verified configs are objects"
        return config

    def _image(self, image_id: str, data: dict[str, dict[str, Any]]) -> Image:
        config = self._config(image_id)
        diff_ids = tuple(config["rootfs"]["diff_ids"])
        size = 0
        for diff in dict.fromkeys(diff_ids):
            with contextlib.suppress(FileNotFoundError):
                size += (self.blobs / _hex(diff)).stat().st_size
        record = data["images"].get(image_id) or {}
        created = config.get("created") or record.get("imported") or ""
        tags = sorted(t for t, i in data["tags"].items() if i == image_id)
        return Image(image_id, tags, ImageConfig.from_oci(config.get("config")), diff_ids,
                     size, str(created))

    # -- the API ---------------------------------------------------------------------

    def import_file(self, path: Path, ref: str, changes: Sequence[str] = ()) -> Image:
        """Import the image file at ``path`` as ``ref`` (NAME[:TAG]); ``changes`` are
        ``--change`` instructions for a plain rootfs. Raises ConfigError (the file,
        the name or a change is refused: nothing is stored), StorageError, OSError."""
        reference = parse_reference(ref, "name")
        self._ensure()
        with self._lock():
            self._clean_locked()
        with self._scratch("import-") as scratch:
            archive = read_archive(Path(path), scratch, list(changes))
            image_id = f"sha256:{hashlib.sha256(archive.config_bytes).hexdigest()}"
            with self._lock():
                for layer in archive.layers:
                    blob = self.blobs / _hex(layer.diff_id)
                    if not blob.exists():
                        os.replace(layer.path, blob)
                config_blob = self.blobs / _hex(image_id)
                if not config_blob.exists():
                    write_private(config_blob, archive.config_bytes)
                fsync_dir(self.blobs)
                data = self._read()
                data["images"].setdefault(image_id, {"imported": _now()})
                data["tags"][str(reference)] = image_id
                self._write_locked(data)
                return self._image(image_id, data)

    def images(self) -> list[Image]:
        """Every image, tagged or not, newest first."""
        data = self._read()
        found = [self._image(i, data) for i in data["images"]]
        return sorted(found, key=lambda im: (im.created, im.id), reverse=True)

    def resolve(self, ref: str) -> Image:
        """The image ``ref`` names: NAME[:TAG], an id, or a unique id prefix. Raises
        ConfigError (not a reference, or an ambiguous prefix), NotFound."""
        data = self._read()
        return self._image(self._resolve_id(ref, data), data)

    def _resolve_id(self, ref: str, data: dict[str, dict[str, Any]]) -> str:
        lookup = parse_lookup(ref)
        if lookup.reference is not None and str(lookup.reference) in data["tags"]:
            return str(data["tags"][str(lookup.reference)])
        if lookup.id_prefix is not None:
            matches = [i for i in data["images"] if _hex(i).startswith(lookup.id_prefix)]
            if len(matches) > 1:
                raise ConfigError(f"image id prefix {ref!r} matches {len(matches)} images; "
                                  "give more digits", "image")
            if matches:
                return matches[0]
        raise NotFound(f"no image named {ref!r}")

    def remove(self, ref: str, containers: Iterable[dict[str, Any]] = ()) -> list[str]:
        """Remove ``ref``: a tag is untagged, and the image goes when no tag is left; an
        id removes the image (refused while it has more than one tag, as Docker does).
        With the image go its config and the layer blobs and extracted layers no other
        image uses. Refused (Conflict) while one of ``containers`` (API records) runs
        the image. Returns what went: ``Untagged: name:tag``, ``Deleted: sha256:...``.
        Raises ConfigError, NotFound, Conflict."""
        containers = list(containers)
        if not self.root.exists():
            raise NotFound(f"no image named {ref!r}")
        with self._lock():
            data = self._read()
            image_id = self._resolve_id(ref, data)
            image = self._image(image_id, data)
            lookup = parse_lookup(ref)
            by_tag = lookup.reference is not None and str(lookup.reference) in data["tags"]
            if not by_tag and len(image.tags) > 1:
                raise Conflict(f"image {short_id(image_id)} has tags "
                               f"{', '.join(image.tags)}; remove them by name")
            untag = [str(lookup.reference)] if by_tag else image.tags
            users = used_by(containers, image)
            if users and set(untag) >= set(image.tags):  # only untagging is fine
                raise Conflict(f"image {image.name} is used by container"
                               f"{'s' if len(users) > 1 else ''} {', '.join(users)}; "
                               "remove them first")
            done = [f"Untagged: {t}" for t in untag]
            for tag in untag:
                del data["tags"][tag]
            if any(i == image_id for i in data["tags"].values()):
                self._write_locked(data)
                return done
            del data["images"][image_id]
            kept = {d for other in data["images"] for d in self._image(other, data).diff_ids}
            self._write_locked(data)
            done.append(f"Deleted: {image_id}")
            (self.blobs / _hex(image_id)).unlink(missing_ok=True)
            for diff in dict.fromkeys(image.diff_ids):
                if diff in kept:
                    continue
                (self.blobs / _hex(diff)).unlink(missing_ok=True)
                extracted = self.layers / _hex(diff)
                if extracted.exists():
                    shutil.rmtree(extracted)
                done.append(f"Deleted: {diff}")
            fsync_dir(self.blobs)
            return done

    def layer_dirs(self, image: Image) -> list[Path]:
        """The directories of ``image``'s layers, bottom to top (overlayfs wants
        ``lowerdir`` top first: reverse it), each extracted on first use. A layer
        that appears twice is given once, at its topmost place (the view is the
        same). Every layer blob is hashed first. Raises MeshletError (a blob missing
        or corrupt; a layer the extraction checks refuse), OSError."""
        self._ensure()
        order = list(reversed(dict.fromkeys(reversed(image.diff_ids))))
        with self._lock(exclusive=False):
            for diff in order:
                blob = self.blobs / _hex(diff)
                try:
                    got = file_digest(blob)
                except FileNotFoundError:
                    raise MeshletError(f"image {image.name}: layer {diff} is missing "
                                       f"({blob}); import the image again") from None
                if got != diff:
                    raise MeshletError(f"image {image.name}: layer {diff} is corrupt (its "
                                       f"content is {got}); remove the image and import "
                                       "it again")
        dirs = []
        for diff in order:
            target = self.layers / _hex(diff)
            if not target.is_dir():
                self._extract(image, diff, target)
            dirs.append(target)
        return dirs

    def _extract(self, image: Image, diff: str, target: Path) -> None:
        """Extract layer ``diff`` to ``target``: into scratch, then renamed (so a
        directory there is always whole; a concurrent caller's rename wins)."""
        with self._scratch("extract-") as scratch:
            work = scratch / "layer"
            os.mkdir(work, 0o755)
            os.chmod(work, 0o755)  # the layer's own "./" entry, if any, says otherwise
            try:
                layer_tar.extract(self.blobs / _hex(diff), work,
                                  f"image {image.name}: layer {diff}")
            except ConfigError as exc:
                raise MeshletError(exc.message) from None
            with self._lock(exclusive=False):
                try:
                    os.rename(work, target)
                except OSError as exc:
                    if exc.errno not in (errno.ENOTEMPTY, errno.EEXIST):
                        raise
                fsync_dir(self.layers)

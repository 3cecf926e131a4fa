"""Reading an image file: a rootfs tarball, a ``docker save`` archive, an OCI layout.

The format is told by content, not by name: a tar with ``manifest.json`` at its top is
a docker archive (``podman save``'s default is the same format); a directory, or a
tar, with ``oci-layout`` and ``index.json`` is an OCI image layout; any other tar is a
root file system, one layer, whose config comes from ``--change``. The file itself
may be gzip, bzip2 or xz compressed (zstd is refused: Python cannot read it).

``read_archive`` stages every layer as an uncompressed tar in a scratch directory
the caller gives (inside the store, so committing is a rename) and returns only when
all of it is verified: OCI blobs against their descriptors' sha256 and size, every
layer's uncompressed sha256 against the config's ``rootfs.diff_ids``, every member of
every layer against ``layer_tar``'s checks. Anything short of that is a ConfigError
and nothing reaches the store. Bounds: JSON files 1 MiB and 32 deep, 128 layers,
member names 4096 bytes, no member outside the archive's root.
"""

from __future__ import annotations

import bz2
import gzip
import hashlib
import json
import lzma
import os
import platform
import posixpath
import re
import stat
import tarfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from meshlet import json_limits
from meshlet.errors import ConfigError
from meshlet.image import layer_tar
from meshlet.image.config import ImageConfig, apply_changes
from meshlet.private_files import open_new

MAX_LAYERS = 128
# What an import may unpack to, in all: a 250 KB gzip of zeros is a 256 MB tar, and a
# bomb is stopped here rather than when the disk is full.
MAX_UNPACKED = 16 << 30
MAX_INDEX_DEPTH = 4
MAX_LINK_HOPS = 16
CHUNK = 1 << 20
DIGEST = re.compile(r"sha256:[0-9a-f]{64}\Z")
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
MANIFESTS = (OCI_MANIFEST, DOCKER_MANIFEST)
INDEXES = (OCI_INDEX, DOCKER_LIST)
MAGIC = {b"\x1f\x8b": "gzip", b"BZh": "bzip2", b"\xfd7zXZ\x00": "xz",
         b"\x28\xb5\x2f\xfd": "zstd"}


@dataclass(frozen=True)
class StagedLayer:
    """One layer, verified, as an uncompressed tar at ``path``."""

    diff_id: str
    path: Path
    size: int


@dataclass(frozen=True)
class ImageArchive:
    """What a file held: its format, the image config (parsed, and the exact bytes
    whose sha256 is the image id) and its layers bottom to top."""

    format: str
    config: dict[str, Any]
    config_bytes: bytes
    layers: list[StagedLayer]


def go_arch() -> str:
    """This machine's architecture as OCI names it."""
    machine = platform.machine().lower()
    return {"x86_64": "amd64", "aarch64": "arm64", "armv7l": "arm", "i686": "386",
            "i386": "386", "ppc64le": "ppc64le", "s390x": "s390x"}.get(machine, machine)


def compression(head: bytes) -> str | None:
    for magic, name in MAGIC.items():
        if head.startswith(magic):
            return name
    return None


def _kind(raw: IO[bytes], what: str) -> str | None:
    """The compression ``raw`` (seekable, at its start; left there) starts with."""
    head = raw.read(6)
    raw.seek(0)
    kind = compression(head)
    if kind == "zstd":
        raise ConfigError(f"{what} is zstd-compressed, which meshlet cannot read; "
                          "decompress it (zstd -d) or save it with gzip", "file")
    return kind


def _decompressor(kind: str | None, stream: Any) -> Any:
    if kind == "gzip":
        return gzip.GzipFile(fileobj=stream, mode="rb")
    if kind == "bzip2":
        return bz2.BZ2File(stream)
    if kind == "xz":
        return lzma.LZMAFile(stream)
    return stream


class _Limited:
    """A reader that ends after ``limit`` bytes of ``source``."""

    def __init__(self, source: IO[bytes], limit: int) -> None:
        self.source, self.left = source, limit

    def read(self, n: int = -1) -> bytes:
        if n is None or n < 0 or n > self.left:
            n = self.left
        data = self.source.read(n) if n else b""
        self.left -= len(data)
        return data


class _Tee:
    """A reader that hashes what passes through and copies it to ``out``."""

    def __init__(self, source: IO[bytes] | _Limited, out: IO[bytes] | None = None,
                 limit: int | None = None, what: str = "") -> None:
        self.source, self.out = source, out
        self.hash = hashlib.sha256()
        self.size = 0
        self.limit, self.what = limit, what

    def read(self, n: int = -1) -> bytes:
        data = self.source.read(n if n is not None and n >= 0 else -1)
        self.hash.update(data)
        self.size += len(data)
        if self.limit is not None and self.size > self.limit:
            raise ConfigError(f"{self.what}: unpacks to more than {self.limit >> 30} GiB",
                              "file")
        if self.out is not None:
            self.out.write(data)
        return data

    def drain(self) -> None:
        while self.read(CHUNK):
            pass

    @property
    def digest(self) -> str:
        return f"sha256:{self.hash.hexdigest()}"


def stage_layer(raw: IO[bytes], dest: Path, what: str, blob_digest: str | None = None,
                blob_size: int | None = None) -> StagedLayer:
    """Copy the layer ``raw`` (seekable; compressed or not) to ``dest`` uncompressed,
    scanning its members; check the bytes as stored against ``blob_digest`` and
    ``blob_size`` when given. Raises ConfigError."""
    kind = _kind(raw, what)
    # A blob never needs more than its descriptor's size (and one byte to tell it is
    # longer): a layout's blob may be a link to /dev/zero, or a file still growing.
    stored = _Tee(raw if blob_size is None else _Limited(raw, blob_size + 1))
    with open_new(dest) as out:
        layer = _Tee(_decompressor(kind, stored), out, MAX_UNPACKED, what)
        try:
            layer_tar.scan(layer, what)  # type: ignore[arg-type]
            layer.drain()
            stored.drain()
        except (OSError, EOFError, lzma.LZMAError) as exc:
            raise ConfigError(f"{what}: cannot be read ({exc})", "file") from None
        out.flush()
        os.fsync(out.fileno())
    if blob_digest is not None and (stored.digest != blob_digest
                                    or (blob_size is not None and stored.size != blob_size)):
        raise ConfigError(f"{what}: blob is {stored.digest} ({stored.size} bytes), its "
                          f"descriptor says {blob_digest} ({blob_size} bytes)", "file")
    return StagedLayer(layer.digest, dest, layer.size)


def _json(raw: bytes, what: str) -> Any:
    return json_limits.loads(raw, what)


def _read_limited(f: IO[bytes], what: str) -> bytes:
    data = f.read(json_limits.MAX_BYTES + 1)
    if len(data) > json_limits.MAX_BYTES:
        raise ConfigError(f"{what} is larger than {json_limits.MAX_BYTES} bytes", "file")
    return data


# -- sources: a tar or a directory -------------------------------------------------


class _TarSource:
    """Members of an (uncompressed) outer tar, by clean name; symbolic links between
    them followed, inside the archive only."""

    def __init__(self, tar: tarfile.TarFile, what: str) -> None:
        self.tar, self.what = tar, what
        self.members: dict[str, tarfile.TarInfo] = {}
        for member in tar.getmembers():
            self.members[layer_tar.clean_name(member.name, what)] = member

    def has(self, name: str) -> bool:
        return name in self.members

    @contextmanager
    def open(self, name: str) -> Iterator[IO[bytes]]:
        clean = layer_tar.clean_name(name, self.what)
        for _ in range(MAX_LINK_HOPS):
            member = self.members.get(clean)
            if member is None:
                raise ConfigError(f"{self.what}: has no {name!r}", "file")
            if member.issym() or member.islnk():
                target = member.linkname if member.islnk() else posixpath.join(
                    posixpath.dirname(clean), member.linkname)
                clean = layer_tar.clean_name(posixpath.normpath(target), self.what)
                continue
            if not member.isreg():
                raise ConfigError(f"{self.what}: {name!r} is not a file", "file")
            f = self.tar.extractfile(member)
            assert f is not None
            with f:
                yield f
            return
        raise ConfigError(f"{self.what}: {name!r}: too many symbolic links", "file")


class _DirSource:
    def __init__(self, root: Path, what: str) -> None:
        self.root, self.what = root, what

    def has(self, name: str) -> bool:
        return (self.root / layer_tar.clean_name(name, self.what)).is_file()

    @contextmanager
    def open(self, name: str) -> Iterator[IO[bytes]]:
        path = self.root / layer_tar.clean_name(name, self.what)
        try:  # O_NONBLOCK: a FIFO put there must not hold the import forever
            fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
        except OSError as exc:
            raise ConfigError(f"{self.what}: cannot read {name}: {exc.strerror}",
                              "file") from None
        f = os.fdopen(fd, "rb")
        with f:
            if not stat.S_ISREG(os.fstat(fd).st_mode):
                raise ConfigError(f"{self.what}: {name} is not a regular file", "file")
            os.set_blocking(fd, True)
            yield f


_Source = _TarSource | _DirSource


def _load(source: _Source, name: str, what: str) -> tuple[bytes, Any]:
    with source.open(name) as f:
        raw = _read_limited(f, what)
    return raw, _json(raw, what)


# -- formats --------------------------------------------------------------------------


def _check_config(config: Any, layers: int, what: str) -> dict[str, Any]:
    """An image config with ``layers`` diff ids; its ``config`` object must parse."""
    if not isinstance(config, dict):
        raise ConfigError(f"{what}: the image config is not a JSON object", "file")
    rootfs = config.get("rootfs")
    diff_ids = rootfs.get("diff_ids") if isinstance(rootfs, dict) else None
    if not (isinstance(diff_ids, list) and all(isinstance(d, str) and DIGEST.match(d)
                                               for d in diff_ids)):
        raise ConfigError(f"{what}: the image config has no rootfs.diff_ids of "
                          "sha256 digests", "file")
    if len(diff_ids) != layers:
        raise ConfigError(f"{what}: the image config lists {len(diff_ids)} layers, the "
                          f"manifest {layers}", "file")
    if layers > MAX_LAYERS:
        raise ConfigError(f"{what}: {layers} layers; at most {MAX_LAYERS} are allowed",
                          "file")
    ImageConfig.from_oci(config.get("config"))
    created = config.get("created")
    if created is not None and not isinstance(created, str):
        raise ConfigError(f"{what}: the image config's 'created' is not a string", "file")
    return config


def _check_diff(layer: StagedLayer, expected: str, index: int, what: str) -> None:
    if layer.diff_id != expected:
        raise ConfigError(f"{what}: layer {index + 1} is {layer.diff_id} uncompressed, "
                          f"the config's rootfs.diff_ids says {expected}", "file")


def _docker_archive(source: _TarSource, scratch: Path, what: str) -> ImageArchive:
    _, manifest = _load(source, "manifest.json", f"{what}: manifest.json")
    if not (isinstance(manifest, list) and manifest and all(
            isinstance(m, dict) for m in manifest)):
        raise ConfigError(f"{what}: manifest.json is not a list of images", "file")
    if len(manifest) > 1:
        raise ConfigError(f"{what}: holds {len(manifest)} images; save one image per "
                          "file to import it", "file")
    entry = manifest[0]
    config_name, layer_names = entry.get("Config"), entry.get("Layers")
    if not isinstance(config_name, str) or not (
            isinstance(layer_names, list) and all(isinstance(n, str) for n in layer_names)):
        raise ConfigError(f"{what}: manifest.json needs Config (a file) and Layers (a "
                          "list of files)", "file")
    if len(layer_names) > MAX_LAYERS:
        raise ConfigError(f"{what}: {len(layer_names)} layers; at most {MAX_LAYERS} are "
                          "allowed", "file")
    config_bytes, config = _load(source, config_name, f"{what}: {config_name}")
    named = re.search(r"([0-9a-f]{64})(?:\.json)?\Z", config_name)
    if named and hashlib.sha256(config_bytes).hexdigest() != named.group(1):
        raise ConfigError(f"{what}: {config_name} does not match its sha256 name", "file")
    config = _check_config(config, len(layer_names), what)
    layers = []
    for i, name in enumerate(layer_names):
        with source.open(name) as f:
            layer = stage_layer(f, scratch / f"layer-{i}", f"{what}: layer {name}")
        _check_diff(layer, config["rootfs"]["diff_ids"][i], i, what)
        layers.append(layer)
    return ImageArchive("docker-archive", config, config_bytes, layers)


def _descriptor(value: Any, what: str) -> tuple[str, str, int]:
    if not isinstance(value, dict):
        raise ConfigError(f"{what}: a descriptor is not an object", "file")
    media, digest, size = value.get("mediaType"), value.get("digest"), value.get("size")
    if not isinstance(digest, str) or not DIGEST.match(digest):
        raise ConfigError(f"{what}: descriptor digest {str(digest)[:80]!r} is not "
                          "sha256:<64 hex>", "file")
    if not isinstance(size, int) or isinstance(size, bool) or size < 0:
        raise ConfigError(f"{what}: descriptor {digest} has no valid size", "file")
    return (media if isinstance(media, str) else ""), digest, size


def _blob_json(source: _Source, digest: str, size: int, what: str) -> tuple[bytes, Any]:
    if size > json_limits.MAX_BYTES:
        raise ConfigError(f"{what}: {digest} is {size} bytes; at most "
                          f"{json_limits.MAX_BYTES} are allowed", "file")
    with source.open(f"blobs/sha256/{digest[7:]}") as f:
        raw = _read_limited(f, f"{what}: {digest}")
    got = f"sha256:{hashlib.sha256(raw).hexdigest()}"
    if got != digest or len(raw) != size:
        raise ConfigError(f"{what}: blob {digest} is corrupt (its content is {got}, "
                          f"{len(raw)} bytes; the descriptor says {size})", "file")
    return raw, _json(raw, f"{what}: {digest}")


def _pick(manifests: Any, what: str) -> dict[str, Any]:
    """The one manifest of an index: the only one, else the one for this machine."""
    if not (isinstance(manifests, list) and manifests):
        raise ConfigError(f"{what}: the index lists no manifests", "file")
    usable = [m for m in manifests if isinstance(m, dict)
              and m.get("mediaType") in (*MANIFESTS, *INDEXES)]
    if len(usable) == 1:
        return dict(usable[0])
    arch = go_arch()
    mine = [m for m in usable if isinstance(m.get("platform"), dict)
            and m["platform"].get("os") == "linux"
            and m["platform"].get("architecture") == arch]
    if len(mine) == 1:
        return dict(mine[0])
    raise ConfigError(f"{what}: the index lists {len(usable)} manifests, {len(mine)} of "
                      f"them for linux/{arch}; meshlet imports one image a file", "file")


def _oci_layout(source: _Source, scratch: Path, what: str) -> ImageArchive:
    _, layout = _load(source, "oci-layout", f"{what}: oci-layout")
    if not (isinstance(layout, dict) and isinstance(layout.get("imageLayoutVersion"), str)):
        raise ConfigError(f"{what}: oci-layout has no imageLayoutVersion", "file")
    _, index = _load(source, "index.json", f"{what}: index.json")
    if not isinstance(index, dict):
        raise ConfigError(f"{what}: index.json is not an object", "file")
    chosen = _pick(index.get("manifests"), f"{what}: index.json")
    for _ in range(MAX_INDEX_DEPTH):
        media, digest, size = _descriptor(chosen, what)
        _, body = _blob_json(source, digest, size, what)
        if not isinstance(body, dict):
            raise ConfigError(f"{what}: {digest} is not a JSON object", "file")
        media = media or str(body.get("mediaType", ""))
        if media in INDEXES:
            chosen = _pick(body.get("manifests"), f"{what}: index {digest}")
            continue
        if media not in MANIFESTS:
            raise ConfigError(f"{what}: {digest} has media type {media[:80]!r}, not an "
                              "image manifest", "file")
        return _oci_image(source, body, scratch, what)
    raise ConfigError(f"{what}: indexes nest more than {MAX_INDEX_DEPTH} deep", "file")


def _oci_image(source: _Source, manifest: dict[str, Any], scratch: Path,
               what: str) -> ImageArchive:
    _, config_digest, config_size = _descriptor(manifest.get("config"), what)
    config_bytes, config = _blob_json(source, config_digest, config_size, what)
    layers_desc = manifest.get("layers")
    if not isinstance(layers_desc, list):
        raise ConfigError(f"{what}: the manifest has no layers list", "file")
    if len(layers_desc) > MAX_LAYERS:
        raise ConfigError(f"{what}: {len(layers_desc)} layers; at most {MAX_LAYERS} are "
                          "allowed", "file")
    config = _check_config(config, len(layers_desc), what)
    layers = []
    for i, desc in enumerate(layers_desc):
        media, digest, size = _descriptor(desc, what)
        if "zstd" in media:
            raise ConfigError(f"{what}: layer {digest} is zstd-compressed ({media}), which "
                              "meshlet cannot read; re-save the image with gzip layers",
                              "file")
        if not (media.endswith((".tar", "+gzip", ".tar.gzip")) or "tar" in media):
            raise ConfigError(f"{what}: layer {digest} has media type {media[:80]!r}, not "
                              "a tar", "file")
        with source.open(f"blobs/sha256/{digest[7:]}") as f:
            layer = stage_layer(f, scratch / f"layer-{i}", f"{what}: layer {digest}",
                                digest, size)
        _check_diff(layer, config["rootfs"]["diff_ids"][i], i, what)
        layers.append(layer)
    return ImageArchive("oci-layout", config, config_bytes, layers)


def rootfs_config(diff_id: str, changes: Sequence[str]) -> tuple[dict[str, Any], bytes]:
    """The config of a plain rootfs: one layer, ``--change`` applied. It holds no
    time, so the same tarball with the same changes is the same image."""
    image_config = apply_changes(ImageConfig(), changes)
    config = {"architecture": go_arch(), "os": "linux", "config": image_config.to_oci(),
              "rootfs": {"type": "layers", "diff_ids": [diff_id]},
              "history": [{"comment": "imported by meshlet image import",
                           "created_by": " ".join(changes)}]}
    return config, json.dumps(config, sort_keys=True, separators=(",", ":")).encode()


def read_archive(path: Path, scratch: Path, changes: Sequence[str] = ()) -> ImageArchive:
    """Read and verify the image at ``path``, staging its layers in ``scratch``.
    ``changes`` (``--change``) apply to a plain rootfs only; given for another format
    they are refused. Raises ConfigError."""
    what = str(path)
    if path.is_dir():
        source: _Source = _DirSource(path, what)
        if not (source.has("oci-layout") and source.has("index.json")):
            raise ConfigError(f"{what}: a directory, but not an OCI image layout (no "
                              "oci-layout and index.json)", "file")
        _no_changes(changes, "an OCI image layout", what)
        return _oci_layout(source, scratch, what)
    try:
        raw = open(path, "rb")
    except OSError as exc:
        raise ConfigError(f"cannot read {what}: {exc.strerror}", "file") from None
    with raw:
        plain = _plain_tar(raw, scratch, what)
    try:
        tar = tarfile.open(plain, mode="r:")
    except tarfile.TarError as exc:
        raise ConfigError(f"{what}: not a tar archive ({exc})", "file") from None
    with tar:
        top = _top_names(tar, what)
        if "manifest.json" in top or {"oci-layout", "index.json"} <= top:
            tar_source = _TarSource(tar, what)
            if tar_source.has("manifest.json"):
                _no_changes(changes, "a docker archive", what)
                return _docker_archive(tar_source, scratch, what)
            _no_changes(changes, "an OCI image layout", what)
            return _oci_layout(tar_source, scratch, what)
    with open(plain, "rb") as f:
        layer = stage_layer(f, scratch / "layer-0", f"{what}: rootfs")
    if plain != path:
        plain.unlink()
    config, config_bytes = rootfs_config(layer.diff_id, changes)
    return ImageArchive("rootfs", config, config_bytes, [layer])


def _no_changes(changes: Sequence[str], kind: str, what: str) -> None:
    if changes:
        raise ConfigError(f"{what} is {kind}: its image config is its own; --change "
                          "applies to a plain rootfs tarball only", "change")


def _top_names(tar: tarfile.TarFile, what: str) -> set[str]:
    """Clean names of the members at the archive's top."""
    names = set()
    for member in tar.getmembers():
        name = layer_tar.clean_name(member.name, what)
        if name and "/" not in name:
            names.add(name)
    return names


def _plain_tar(raw: IO[bytes], scratch: Path, what: str) -> Path:
    """The file as an uncompressed tar: itself, or decompressed into ``scratch``."""
    kind = _kind(raw, what)
    if kind is None:
        return Path(raw.name)
    stream = _decompressor(kind, raw)
    dest = scratch / "archive.tar"
    unpacked = 0
    try:
        with open_new(dest) as out:
            while chunk := stream.read(CHUNK):
                unpacked += len(chunk)
                if unpacked > MAX_UNPACKED:
                    raise ConfigError(f"{what}: unpacks to more than "
                                      f"{MAX_UNPACKED >> 30} GiB", "file")
                out.write(chunk)
    except (OSError, EOFError, lzma.LZMAError) as exc:
        raise ConfigError(f"{what}: cannot be decompressed ({exc})", "file") from None
    return dest

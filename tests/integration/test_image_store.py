"""The image store with real files: every import format, sharing, verification,
hostile tarballs, removal and file modes."""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import shutil
import stat
import subprocess
import tarfile
import tempfile
from pathlib import Path
from typing import Any

import pytest

from meshlet.errors import ConfigError, Conflict, MeshletError, NotFound
from meshlet.image import layer_tar
from meshlet.image.config import ImageConfig
from meshlet.image.store import ImageStore, used_by
from tests.images import busybox_rootfs

ROOT = os.geteuid() == 0
needs_root = pytest.mark.skipif(not ROOT, reason="needs root: whiteouts are character "
                                "devices and trusted.* extended attributes")
Entry = tuple[Any, ...]  # (name, kind, data or link target, mode, uid)


def tar_bytes(entries: list[Entry]) -> bytes:
    """A tar of ``entries``: (name, "file"|"dir"|"sym"|"hard"|"chr"|"fifo", data or
    link target, mode, uid)."""
    kinds = {"file": tarfile.REGTYPE, "dir": tarfile.DIRTYPE, "sym": tarfile.SYMTYPE,
             "hard": tarfile.LNKTYPE, "chr": tarfile.CHRTYPE, "fifo": tarfile.FIFOTYPE}
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for entry in entries:
            name, kind, payload, mode, uid = (*entry, None, None, None)[:5]
            info = tarfile.TarInfo(name)
            info.type = kinds[kind]
            info.mode = mode if mode is not None else (0o755 if kind == "dir" else 0o644)
            info.uid = info.gid = uid or 0
            info.mtime = 1_700_000_000
            data = payload if kind == "file" else b""
            if kind in ("sym", "hard"):
                info.linkname = payload
            info.size = len(data or b"")
            tar.addfile(info, io.BytesIO(data or b"") if kind == "file" else None)
    return out.getvalue()


def digest(data: bytes) -> str:
    return f"sha256:{hashlib.sha256(data).hexdigest()}"


BASE = [("etc", "dir"), ("etc/old", "file", b"old\n"), ("www", "dir"),
        ("www/index.html", "file", b"hi\n"), ("opt", "dir"), ("opt/a", "file", b"a"),
        ("bin", "dir"), ("bin/su", "file", b"#!su", 0o4755), ("home", "dir"),
        ("home/web", "dir", None, 0o700, 1000), ("home/web/notes", "file", b"n", 0o600, 1000)]
TOP = [("etc", "dir"), ("etc/.wh.old", "file", b""), ("opt", "dir"),
       ("opt/.wh..wh..opq", "file", b""), ("opt/b", "file", b"b"),
       ("www/index.html", "file", b"new\n")]


def image_config(layers: list[bytes], **config: Any) -> bytes:
    body = {"architecture": "amd64", "os": "linux", "created": "2024-01-02T03:04:05Z",
            "config": config or {"Cmd": ["httpd", "-f"], "Env": ["PATH=/bin"]},
            "rootfs": {"type": "layers", "diff_ids": [digest(x) for x in layers]}}
    return json.dumps(body).encode()


def write_tar(path: Path, files: dict[str, bytes]) -> Path:
    path.write_bytes(tar_bytes([(n, "file", d) for n, d in files.items()]))
    return path


def docker_save(path: Path, layers: list[bytes], config: bytes | None = None) -> Path:
    """An archive as `docker save` writes it: <id>.json, <n>/layer.tar, manifest.json."""
    config = config or image_config(layers)
    config_name = f"{digest(config)[7:]}.json"
    files = {config_name: config}
    for i, layer in enumerate(layers):
        files[f"{i}/layer.tar"] = layer
    files["manifest.json"] = json.dumps([{
        "Config": config_name, "RepoTags": ["web:1"],
        "Layers": [f"{i}/layer.tar" for i in range(len(layers))]}]).encode()
    return write_tar(path, files)


def oci_layout(root: Path, layers: list[bytes], compress: bool = True,
               media: str | None = None) -> Path:
    """An OCI image layout directory with gzip (or plain) layers."""
    blobs = root / "blobs" / "sha256"
    blobs.mkdir(parents=True)

    def put(data: bytes) -> str:
        d = digest(data)
        (blobs / d[7:]).write_bytes(data)
        return d
    config = image_config(layers, Entrypoint=["/bin/httpd"], ExposedPorts={"80/tcp": {}})
    descs = []
    for layer in layers:
        blob = gzip.compress(layer, mtime=0) if compress else layer
        descs.append({"mediaType": media or "application/vnd.oci.image.layer.v1.tar"
                      + ("+gzip" if compress else ""),
                      "digest": put(blob), "size": len(blob)})
    manifest = json.dumps({
        "schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                   "digest": put(config), "size": len(config)},
        "layers": descs}).encode()
    (root / "oci-layout").write_text('{"imageLayoutVersion": "1.0.0"}')
    (root / "index.json").write_text(json.dumps({"schemaVersion": 2, "manifests": [{
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "digest": put(manifest), "size": len(manifest),
        "platform": {"os": "linux", "architecture": "amd64"}}]}))
    return root


def tar_dir(root: Path, path: Path) -> Path:
    with tarfile.open(path, "w") as tar:
        for entry in sorted(root.rglob("*")):
            tar.add(entry, arcname=str(entry.relative_to(root)), recursive=False)
    return path


def tree(root: Path) -> dict[str, int]:
    return {str(p.relative_to(root)): p.stat().st_size if p.is_file() else -1
            for p in root.rglob("*") if "tmp" not in p.relative_to(root).parts[:1]}


@pytest.fixture
def store(tmp_path: Path) -> ImageStore:
    return ImageStore(tmp_path / "agent" / "images")


def test_a_rootfs_plain_and_gzip_with_changes(store: ImageStore, tmp_path: Path) -> None:
    plain = busybox_rootfs(tmp_path / "rootfs.tar")
    packed = tmp_path / "rootfs.tar.gz"
    packed.write_bytes(gzip.compress(plain.read_bytes()))
    changes = ['CMD ["httpd", "-f", "-h", "/www"]', "EXPOSE 8080", "ENV GREETING=hi",
               "WORKDIR /www", "USER web"]
    first = store.import_file(plain, "busybox", changes)
    assert first.tags == ["busybox:latest"]
    assert first.config == ImageConfig(None, ("httpd", "-f", "-h", "/www"),
                                       ("GREETING=hi",), "/www", ("8080/tcp",), "web", {})
    second = store.import_file(packed, "busybox:gz", changes)
    assert second.id == first.id  # same content, same changes: one image, two tags
    assert store.resolve("busybox:gz").tags == ["busybox:gz", "busybox:latest"]
    assert store.resolve(first.id[7:19]).id == first.id
    assert store.resolve(first.id).id == first.id
    assert second.size == plain.stat().st_size
    [layer] = store.layer_dirs(first)
    assert (layer / "etc" / "passwd").read_text().startswith("root:")
    assert os.readlink(layer / "bin" / "sh") == "busybox"
    assert stat.S_IMODE((layer / "bin" / "busybox").stat().st_mode) == 0o755
    assert store.layer_dirs(first) == [layer]  # extracted once
    assert len(list(store.images())) == 1


def test_a_docker_save_archive_with_whiteouts(store: ImageStore, tmp_path: Path) -> None:
    base, top = tar_bytes(BASE), tar_bytes(TOP)
    archive = docker_save(tmp_path / "web.tar", [base, top])
    found = store.import_file(archive, "web:1")
    assert found.diff_ids == (digest(base), digest(top))
    assert found.created == "2024-01-02T03:04:05Z"
    assert found.config.cmd == ("httpd", "-f") and found.config.env == ("PATH=/bin",)
    if not ROOT:
        with pytest.raises(MeshletError, match="needs root"):
            store.layer_dirs(found)
        return
    lower, upper = store.layer_dirs(found)
    su = (lower / "bin" / "su").stat()
    assert stat.S_IMODE(su.st_mode) == 0o4755  # setuid kept
    notes = (lower / "home" / "web" / "notes").stat()
    assert (notes.st_uid, notes.st_gid, stat.S_IMODE(notes.st_mode)) == (1000, 1000, 0o600)
    assert stat.S_IMODE((lower / "home" / "web").stat().st_mode) == 0o700
    whiteout = os.lstat(upper / "etc" / "old")
    assert stat.S_ISCHR(whiteout.st_mode) and whiteout.st_rdev == 0
    assert (whiteout.st_uid, whiteout.st_gid) == (0, 0)
    assert os.getxattr(upper / "opt", "trusted.overlay.opaque") == b"y"
    assert not (upper / "opt" / ".wh..wh..opq").exists()
    assert (upper / "www" / "index.html").read_bytes() == b"new\n"


@pytest.mark.parametrize("as_tar", [False, True])
def test_an_oci_layout_with_gzip_layers(store: ImageStore, tmp_path: Path,
                                        as_tar: bool) -> None:
    base = tar_bytes(BASE[:4])
    layout = oci_layout(tmp_path / "oci", [base])
    found = store.import_file(tar_dir(layout, tmp_path / "oci.tar") if as_tar else layout,
                              "web:oci")
    assert found.config.entrypoint == ("/bin/httpd",)
    assert found.config.exposed_ports == ("80/tcp",)
    assert found.diff_ids == (digest(base),)
    blob = store.root / "blobs" / "sha256" / digest(base)[7:]
    assert blob.read_bytes() == base  # stored uncompressed, by diff id
    [layer] = store.layer_dirs(found)
    assert (layer / "www" / "index.html").read_bytes() == b"hi\n"


def test_a_layout_blob_is_read_no_further_than_its_size(store: ImageStore,
                                                        tmp_path: Path) -> None:
    """A layout's layer blob that is a link to /dev/zero (or a file still growing) is
    read up to its descriptor's size, then refused, instead of filling the disk."""
    base = tar_bytes(BASE[:4])
    layout = oci_layout(tmp_path / "oci", [base], compress=False)
    blob = layout / "blobs" / "sha256" / digest(base)[7:]
    blob.unlink()
    blob.symlink_to("/dev/zero")
    with pytest.raises(ConfigError):
        store.import_file(layout, "zero")
    assert store.images() == []


def test_two_images_share_a_layer_once(store: ImageStore, tmp_path: Path) -> None:
    base, top = tar_bytes(BASE), tar_bytes(TOP)
    one = store.import_file(docker_save(tmp_path / "a.tar", [base, top]), "one")
    two = store.import_file(oci_layout(tmp_path / "oci", [base]), "two")
    blobs = sorted(p.name for p in (store.root / "blobs" / "sha256").iterdir())
    assert blobs == sorted({one.id[7:], two.id[7:], digest(base)[7:], digest(top)[7:]})
    assert len(blobs) == 4


def test_a_corrupt_blob_is_refused_on_read(store: ImageStore, tmp_path: Path) -> None:
    found = store.import_file(busybox_rootfs(tmp_path / "r.tar"), "bb")
    blob = store.root / "blobs" / "sha256" / found.diff_ids[0][7:]
    data = bytearray(blob.read_bytes())
    data[600] ^= 0xFF
    blob.write_bytes(bytes(data))
    with pytest.raises(MeshletError, match=r"image bb:latest: layer sha256:[0-9a-f]{64} "
                                           r"is corrupt \(its content is sha256:"):
        store.layer_dirs(found)
    assert not list((store.root / "layers").iterdir())


def test_a_layer_not_matching_its_diff_id_is_refused(store: ImageStore,
                                                     tmp_path: Path) -> None:
    store.import_file(busybox_rootfs(tmp_path / "r.tar"), "bb")
    before = tree(store.root)
    base, other = tar_bytes(BASE), tar_bytes(TOP)
    lying = docker_save(tmp_path / "lie.tar", [other], image_config([base]))
    with pytest.raises(ConfigError, match=r"rootfs\.diff_ids says"):
        store.import_file(lying, "lie")
    layout = oci_layout(tmp_path / "oci", [base])
    [blob] = [p for p in (layout / "blobs" / "sha256").iterdir()
              if p.read_bytes()[:2] == b"\x1f\x8b"]
    blob.write_bytes(gzip.compress(other))
    with pytest.raises(ConfigError, match="its descriptor says"):
        store.import_file(layout, "lie")
    assert tree(store.root) == before
    assert not list((store.root / "tmp").iterdir())
    with pytest.raises(NotFound, match="no image named 'lie'"):
        store.resolve("lie")


def test_refused_archives_say_why(store: ImageStore, tmp_path: Path) -> None:
    zstd = oci_layout(tmp_path / "z", [tar_bytes(BASE)], compress=False,
                      media="application/vnd.oci.image.layer.v1.tar+zstd")
    with pytest.raises(ConfigError, match="zstd"):
        store.import_file(zstd, "z")
    two = write_tar(tmp_path / "two.tar", {"manifest.json": b'[{}, {}]'})
    with pytest.raises(ConfigError, match="holds 2 images"):
        store.import_file(two, "x")
    deep = write_tar(tmp_path / "deep.tar", {"manifest.json": b"[" * 40 + b"]" * 40})
    with pytest.raises(ConfigError, match="32 deep"):
        store.import_file(deep, "x")
    big = write_tar(tmp_path / "big.tar", {"manifest.json": b" " * (1024 * 1024 + 1)})
    with pytest.raises(ConfigError, match="larger than"):
        store.import_file(big, "x")
    many = [tar_bytes([]) for _ in range(129)]
    with pytest.raises(ConfigError, match="at most 128"):
        store.import_file(docker_save(tmp_path / "many.tar", many), "x")
    changed = docker_save(tmp_path / "c.tar", [tar_bytes(BASE)])
    with pytest.raises(ConfigError, match="--change applies to a plain rootfs"):
        store.import_file(changed, "x", ["CMD ls"])
    (tmp_path / "empty").mkdir()
    with pytest.raises(ConfigError, match="not an OCI image layout"):
        store.import_file(tmp_path / "empty", "x")
    with pytest.raises(ConfigError, match="is not valid"):
        store.import_file(changed, "Bad")


@pytest.mark.parametrize(("entries", "words"), [
    ([("/etc/passwd", "file", b"x")], "absolute name"),
    ([("../escape", "file", b"x")], "climbs out"),
    ([("a/../../escape", "file", b"x")], "climbs out"),
    ([("evil", "sym", "/etc"), ("evil/passwd", "file", b"x")], "symbolic link"),
    ([("evil", "sym", "../../.."), ("evil/x", "file", b"x")], "symbolic link"),
    ([("h", "hard", "../../etc/passwd")], "climbs out"),
    ([("s", "sym", "/etc/passwd"), ("h", "hard", "s")], "symbolic link"),
    ([("null", "chr", None)], "device"),
    ([("pipe", "fifo", None)], "fifo"),
    ([("x" * 4097, "file", b"x")], "4096"),
])
def test_hostile_layers_are_refused_on_import(store: ImageStore, tmp_path: Path,
                                              entries: list[Entry], words: str) -> None:
    path = tmp_path / "hostile.tar"
    path.write_bytes(tar_bytes(entries))
    with pytest.raises(ConfigError, match=words):
        store.import_file(path, "hostile")
    assert store.images() == []


@pytest.mark.parametrize(("entries", "words"), [
    # a chain the import's lexical look cannot see through: a -> b, b -> /etc
    ([("b", "sym", "/etc"), ("a", "sym", "b"), ("a/passwd", "file", b"x")],
     "outside the layer"),
    ([("b", "sym", "/etc"), ("a", "sym", "b"), ("h", "hard", "a/passwd")],
     "outside the layer"),
    ([("null", "chr", None)], "device"),
    ([("/abs", "file", b"x")], "absolute"),
])
def test_extraction_checks_every_member_itself(tmp_path: Path, entries: list[Entry],
                                               words: str) -> None:
    blob = tmp_path / "layer.tar"
    blob.write_bytes(tar_bytes(entries))
    dest = tmp_path / "dest"
    dest.mkdir()
    with pytest.raises(MeshletError, match=words):
        layer_tar.extract(blob, dest, "layer")
    assert (Path("/etc") / "passwd").read_bytes() != b"x"


def test_a_member_replaces_a_symlink_instead_of_writing_through_it(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.write_text("keep")
    blob = tmp_path / "layer.tar"
    blob.write_bytes(tar_bytes([("f", "sym", str(outside)), ("f", "file", b"new")]))
    dest = tmp_path / "dest"
    dest.mkdir()
    layer_tar.extract(blob, dest, "layer")
    assert outside.read_text() == "keep"
    assert not (dest / "f").is_symlink() and (dest / "f").read_bytes() == b"new"


def test_a_directory_replaced_by_a_link_keeps_its_attributes_to_itself(
        tmp_path: Path) -> None:
    """``d/`` (0777, uid 65534) then ``d -> outside``: the directory's owner and mode,
    set after every member is written, must not reach what the link points at."""
    outside = tmp_path / "outside"
    outside.mkdir(mode=0o700)
    os.chmod(outside, 0o700)
    before = outside.stat()
    blob = tmp_path / "layer.tar"
    blob.write_bytes(tar_bytes([("d", "dir", None, 0o777, 65534),
                                ("d", "sym", str(outside)),
                                ("e", "dir", None, 0o777, 65534),
                                ("e/f", "file", b"x"),
                                ("e", "sym", str(outside))]))
    dest = tmp_path / "dest"
    dest.mkdir()
    layer_tar.extract(blob, dest, "layer")
    after = outside.stat()
    assert (stat.S_IMODE(after.st_mode), after.st_uid, after.st_mtime) == \
        (0o700, before.st_uid, before.st_mtime)
    assert (dest / "d").is_symlink() and (dest / "e").is_symlink()


def test_directories_get_their_own_attributes(tmp_path: Path) -> None:
    blob = tmp_path / "layer.tar"
    blob.write_bytes(tar_bytes([("a", "dir", None, 0o750, 65534 if ROOT else 0),
                                ("a/b", "dir", None, 0o700),
                                ("a/b/f", "file", b"x")]))
    dest = tmp_path / "dest"
    dest.mkdir()
    layer_tar.extract(blob, dest, "layer")
    a, b = (dest / "a").stat(), (dest / "a" / "b").stat()
    assert (stat.S_IMODE(a.st_mode), stat.S_IMODE(b.st_mode)) == (0o750, 0o700)
    assert a.st_mtime == b.st_mtime == 1_700_000_000
    assert a.st_uid == (65534 if ROOT else os.geteuid())


def test_remove_deletes_only_what_nothing_else_uses(store: ImageStore,
                                                    tmp_path: Path) -> None:
    base, top = tar_bytes(BASE[:4]), tar_bytes([("extra", "file", b"e")])
    one = store.import_file(docker_save(tmp_path / "a.tar", [base, top]), "one")
    two = store.import_file(oci_layout(tmp_path / "oci", [base]), "two")
    store.layer_dirs(one)
    layers = store.root / "layers"
    assert {p.name for p in layers.iterdir()} == {digest(base)[7:], digest(top)[7:]}
    containers = [{"name": "web-1", "image_id": one.id}, {"name": "other"},
                  {"name": "web-2", "image_id": one.id}]
    assert used_by(containers, one) == ["web-1", "web-2"]
    with pytest.raises(Conflict, match="used by containers web-1, web-2"):
        store.remove("one", containers)
    assert store.remove("one") == ["Untagged: one:latest", f"Deleted: {one.id}",
                                   f"Deleted: {digest(top)}"]
    blobs = {p.name for p in (store.root / "blobs" / "sha256").iterdir()}
    assert blobs == {two.id[7:], digest(base)[7:]}
    assert {p.name for p in layers.iterdir()} == {digest(base)[7:]}
    with pytest.raises(NotFound):
        store.resolve("one")
    assert store.remove(two.id[7:20]) == ["Untagged: two:latest", f"Deleted: {two.id}",
                                          f"Deleted: {digest(base)}"]
    assert not list((store.root / "blobs" / "sha256").iterdir())
    assert not list(layers.iterdir())


def test_tags_move_and_ids_with_several_tags(store: ImageStore, tmp_path: Path) -> None:
    old = store.import_file(docker_save(tmp_path / "a.tar", [tar_bytes(BASE[:2])]), "web")
    new = store.import_file(docker_save(tmp_path / "b.tar", [tar_bytes(BASE[:4])]), "web")
    assert store.resolve("web").id == new.id
    assert store.resolve(old.id).tags == []  # kept, untagged, as Docker's dangling images
    store.import_file(docker_save(tmp_path / "b.tar", [tar_bytes(BASE[:4])]), "web:2")
    with pytest.raises(Conflict, match="has tags web:2, web:latest"):
        store.remove(new.id)
    assert store.remove("web:2") == ["Untagged: web:2"]
    assert store.remove(old.id)[0] == f"Deleted: {old.id}"
    with pytest.raises(NotFound):
        store.remove("nothing")


def test_store_files_are_private(store: ImageStore, tmp_path: Path) -> None:
    found = store.import_file(busybox_rootfs(tmp_path / "r.tar"), "bb")
    store.layer_dirs(found)
    for name in ("", "blobs", "blobs/sha256", "layers", "tmp"):
        assert stat.S_IMODE((store.root / name).stat().st_mode) == 0o700, name
    files = ["lock", "repositories.json",
             *(f"blobs/sha256/{p.name}" for p in (store.root / "blobs/sha256").iterdir())]
    for name in files:
        assert stat.S_IMODE((store.root / name).stat().st_mode) == 0o600, name
    assert json.loads((store.root / "repositories.json").read_text())["tags"] == {
        "bb:latest": found.id}


@pytest.mark.skipif(shutil.which("podman") is None, reason="needs podman")
@pytest.mark.parametrize("fmt", ["docker-archive", "oci-archive", "oci-dir"])
def test_what_podman_saves_imports_as_the_same_image(store: ImageStore, tmp_path: Path,
                                                     fmt: str) -> None:
    runroot = tempfile.mkdtemp(prefix="mlp-")  # podman wants it under 50 characters
    try:
        _podman_round_trip(store, tmp_path, fmt, runroot)
    finally:
        shutil.rmtree(runroot, ignore_errors=True)


def _podman_round_trip(store: ImageStore, tmp_path: Path, fmt: str, runroot: str) -> None:
    podman = ["podman", "--root", str(tmp_path / "podman"), "--runroot", runroot,
              "--storage-driver", "vfs"]
    rootfs = busybox_rootfs(tmp_path / "rootfs.tar")
    made = subprocess.run([*podman, "import", "-c", 'CMD ["httpd", "-f"]', str(rootfs),
                           "localhost/bb:1"], capture_output=True, text=True, check=False,
                          timeout=120)
    if made.returncode != 0:
        pytest.skip(f"podman cannot run here: {made.stderr.strip()[-200:]}")
    podman_id = made.stdout.strip().splitlines()[-1]
    saved = tmp_path / "saved"
    subprocess.run([*podman, "save", "--format", fmt, "-o", str(saved), "localhost/bb:1"],
                   capture_output=True, check=True, timeout=120)
    found = store.import_file(saved, "bb")
    assert found.id.removeprefix("sha256:") == podman_id.removeprefix("sha256:")
    assert found.config.cmd == ("httpd", "-f")
    [layer] = store.layer_dirs(found)
    assert (layer / "bin" / "busybox").is_file()


def test_a_decompression_bomb_is_stopped_and_nothing_is_stored(
        store: ImageStore, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A small gzip that unpacks past the bound (lowered here from 16 GiB to 1 MiB),
    as the outer archive and as a layer of an OCI layout."""
    import gzip

    from meshlet.image import archive
    monkeypatch.setattr(archive, "MAX_UNPACKED", 1 << 20)
    big = tar_bytes([("zeros", "file", b"\0" * (2 << 20))])
    bomb = tmp_path / "bomb.tar.gz"
    bomb.write_bytes(gzip.compress(big))
    assert bomb.stat().st_size < 64 << 10
    with pytest.raises(ConfigError, match="unpacks to more than"):
        store.import_file(bomb, "bomb:1")
    with pytest.raises(ConfigError, match="unpacks to more than"):
        store.import_file(oci_layout(tmp_path / "layout", [big]), "bomb:2")
    assert store.images() == []


def test_a_tag_of_an_image_in_use_may_go_while_the_image_stays(store: ImageStore,
                                                               tmp_path: Path) -> None:
    """As `docker rmi`: untagging one of several tags is fine while a container runs
    the image; removing the image itself (its last tag, or by id) is refused."""
    image = store.import_file(busybox_rootfs(tmp_path / "r.tar"), "one:1")
    store.import_file(tmp_path / "r.tar", "two:1")
    users = [{"name": "c", "image_id": image.id}]
    assert store.remove("two:1", users) == ["Untagged: two:1"]
    with pytest.raises(Conflict, match="used by container c"):
        store.remove("one:1", users)
    assert [i.tags for i in store.images()] == [["one:1"]]


def test_a_fifo_in_a_layout_directory_is_refused_not_waited_on(store: ImageStore,
                                                                tmp_path: Path) -> None:
    layout = oci_layout(tmp_path / "layout", [tar_bytes([("a", "file", b"x")])])
    blob = next(p for p in (layout / "blobs" / "sha256").iterdir()
                if p.stat().st_size > 200)  # the layer, not the small JSON blobs
    blob.unlink()
    os.mkfifo(blob)
    with pytest.raises(ConfigError, match="not a regular file"):
        store.import_file(layout, "fifo:1")
    assert store.images() == []

"""Data directories 0700 and what is in them 0600, from creation, whatever the umask;
what an older version made wider is tightened; shared directories are left alone."""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from meshlet.private_files import open_append, open_new, private_dir, private_tree, write_private
from meshlet.raft.storage import RaftStorage
from meshlet.raft.wal import CommandLog, LogRecord, SnapshotStore


def mode(path: Path) -> int:
    return stat.S_IMODE(os.lstat(path).st_mode)


@pytest.fixture(autouse=True)
def open_umask() -> Iterator[None]:
    """umask 0: every private mode below comes from the code, not from the umask."""
    old = os.umask(0)
    try:
        yield
    finally:
        os.umask(old)


def test_missing_directories_are_made_0700_parents_too(tmp_path: Path) -> None:
    made = private_dir(tmp_path / "a" / "b" / "c")
    assert made.is_dir()
    assert [mode(tmp_path / p) for p in ("a", "a/b", "a/b/c")] == [0o700] * 3


def test_an_existing_wide_directory_is_tightened(tmp_path: Path) -> None:
    wide = tmp_path / "old"
    wide.mkdir(0o755)
    (wide / "keep").mkdir(0o755)
    private_dir(wide)
    assert mode(wide) == 0o700
    assert mode(wide / "keep") == 0o755  # private_dir: only the one it is given


def test_a_shared_sticky_directory_is_left_alone(tmp_path: Path) -> None:
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o1777)
    private_dir(shared)
    assert mode(shared) == 0o1777


def test_a_file_where_a_directory_should_be_is_an_error(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("")
    before = mode(tmp_path / "file")
    with pytest.raises(NotADirectoryError):
        private_dir(tmp_path / "file")
    assert mode(tmp_path / "file") == before


def test_files_are_created_0600(tmp_path: Path) -> None:
    with open_append(tmp_path / "log") as f:
        f.write(b"one\n")
    with open_append(tmp_path / "log") as f:
        f.write(b"two\n")
    with open_new(tmp_path / "new") as f:
        f.write(b"x")
    write_private(tmp_path / "state.json", "{}")
    assert (tmp_path / "log").read_bytes() == b"one\ntwo\n"
    assert (tmp_path / "state.json").read_text() == "{}"
    assert [mode(tmp_path / n) for n in ("log", "new", "state.json")] == [0o600] * 3
    assert not (tmp_path / "state.json.tmp").exists()


def test_an_existing_wide_file_is_tightened_when_opened(tmp_path: Path) -> None:
    old = tmp_path / "old.log"
    old.write_bytes(b"kept\n")
    old.chmod(0o644)
    with open_append(old) as f:
        f.write(b"more\n")
    assert mode(old) == 0o600 and old.read_bytes() == b"kept\nmore\n"


def test_private_tree_tightens_everything_below(tmp_path: Path) -> None:
    root = tmp_path / "data"
    (root / "raft" / "raft-log").mkdir(parents=True, mode=0o755)
    for d in (root, root / "raft", root / "raft" / "raft-log"):
        d.chmod(0o755)
    (root / "raft" / "snapshot.bin").write_bytes(b"s")
    (root / "raft" / "snapshot.bin").chmod(0o644)
    (root / "link").symlink_to("/etc/hostname")
    private_tree(root)
    assert {str(p.relative_to(root)): mode(p) for p in root.rglob("*")
            if not p.is_symlink()} == {"raft": 0o700, "raft/raft-log": 0o700,
                                        "raft/snapshot.bin": 0o600}
    assert mode(root) == 0o700
    assert mode(Path("/etc/hostname")) & 0o044  # the link's target untouched


def test_the_raft_log_and_snapshot_are_private(tmp_path: Path) -> None:
    storage = RaftStorage(tmp_path / "raft")
    log = CommandLog(tmp_path / "raft" / "log")
    list(log.recover())
    log.append([LogRecord(1, {"op": "hard", "term": 1, "vote": None, "commit": 0})])
    log.close()
    SnapshotStore(tmp_path / "raft").save(b"state")
    found = {str(p.relative_to(tmp_path)): mode(p) for p in tmp_path.rglob("*")}
    assert found and all(m == (0o700 if (tmp_path / p).is_dir() else 0o600)
                         for p, m in found.items()), found
    assert "raft/snapshot.bin" in found and storage.directory.is_dir()

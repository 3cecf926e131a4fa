"""Data directories 0700 and what is in them 0600, from creation, whatever the umask;
what an older version made wider is tightened; shared directories are left alone."""

from __future__ import annotations

import os
import pwd
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from meshlet.errors import StorageError
from meshlet.private_files import (
    open_append,
    open_new,
    private_dir,
    private_tree,
    read_or_create_secret,
    read_secret,
    write_private,
    write_secret,
)
from meshlet.proxy.admin_socket import check_private_dir
from meshlet.raft.storage import RaftStorage
from meshlet.raft.wal import CommandLog, LogRecord, SnapshotStore

needs_root = pytest.mark.skipif(os.geteuid() != 0,
                                reason="needs root: gives files to `nobody` (chown)")


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


def test_secrets_are_one_line_0600_in_a_0700_directory_made_for_them(
        tmp_path: Path) -> None:
    path = tmp_path / "made" / "join.token"
    assert read_secret(path) is None
    secret = read_or_create_secret(path)
    assert read_or_create_secret(path) == secret == read_secret(path)
    assert path.read_text() == secret + "\n"
    assert mode(path) == 0o600 and mode(path.parent) == 0o700
    write_secret(path, "another")
    assert read_secret(path) == "another" and mode(path) == 0o600
    assert sorted(p.name for p in path.parent.iterdir()) == ["join.token"]


def test_a_symlink_planted_as_the_temp_file_is_refused(tmp_path: Path) -> None:
    target = tmp_path / "elsewhere"
    target.write_text("kept")
    (tmp_path / "join.token.tmp").symlink_to(target)
    with pytest.raises(StorageError, match="symbolic link"):
        write_secret(tmp_path / "join.token", "secret")
    assert target.read_text() == "kept" and not (tmp_path / "join.token").exists()


def test_server_credentials_are_0600_in_a_0700_directory(tmp_path: Path) -> None:
    from meshlet.security.credentials import ensure_server_credentials
    creds = ensure_server_credentials(tmp_path, "join-token-for-the-test", "s1",
                                      ["127.0.0.1"])
    for path in (creds.key_file, creds.cert_file, creds.ca_file):
        assert mode(path) == 0o600, path
    assert mode(creds.key_file.parent) == 0o700
    assert [p.name for p in tmp_path.rglob("*.tmp")] == []


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
    private_tree(root)
    assert {str(p.relative_to(root)): mode(p) for p in root.rglob("*")} == {
        "raft": 0o700, "raft/raft-log": 0o700, "raft/snapshot.bin": 0o600}
    assert mode(root) == 0o700


def test_private_tree_refuses_a_symlink_below(tmp_path: Path) -> None:
    root = tmp_path / "data"
    (root / "raft").mkdir(parents=True)
    target = tmp_path / "elsewhere"
    target.write_bytes(b"untouched")
    target.chmod(0o644)
    (root / "raft" / "log-00000000000000000001.wal").symlink_to(target)
    with pytest.raises(StorageError, match="wal: a symbolic link in a data directory"):
        private_tree(root)
    assert target.read_bytes() == b"untouched" and mode(target) == 0o644


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


def nobody() -> int:
    return pwd.getpwnam("nobody").pw_uid


def given_to_nobody(path: Path) -> Path:
    os.chown(path, nobody(), -1)
    return path


@needs_root
def test_a_directory_another_user_owns_is_refused_not_tightened(tmp_path: Path) -> None:
    theirs = tmp_path / "theirs"
    theirs.mkdir()
    theirs.chmod(0o777)
    given_to_nobody(theirs)
    with pytest.raises(StorageError, match=f"directory {theirs}: it is owned by nobody"):
        private_dir(theirs)
    assert mode(theirs) == 0o777 and os.stat(theirs).st_uid == nobody()
    with pytest.raises(StorageError, match="owned by nobody"):
        private_dir(theirs / "below")  # nor used as a parent: they could swap it
    assert not (theirs / "below").exists()


@needs_root
def test_a_file_another_user_owns_is_refused_and_left_as_it_was(tmp_path: Path) -> None:
    log = tmp_path / "log-00000000000000000001.wal"
    log.write_bytes(b"theirs\n")
    log.chmod(0o666)
    given_to_nobody(log)
    for opener in (open_append, open_new):
        with pytest.raises(StorageError, match=f"file {log}: it is owned by nobody"):
            opener(log)
    planted = tmp_path / "state.json.tmp"  # write_private's temp file, planted
    planted.write_bytes(b"")
    given_to_nobody(planted)
    with pytest.raises(StorageError, match="owned by nobody"):
        write_private(tmp_path / "state.json", "secret")
    assert not (tmp_path / "state.json").exists()
    assert log.read_bytes() == b"theirs\n" and mode(log) == 0o666  # not truncated


@needs_root
def test_private_tree_refuses_what_another_user_owns_below(tmp_path: Path) -> None:
    root = tmp_path / "data"
    (root / "raft").mkdir(parents=True)
    given_to_nobody(root / "raft")
    with pytest.raises(StorageError, match="raft: it is owned by nobody"):
        private_tree(root)


@needs_root
def test_the_admin_socket_refuses_a_directory_another_user_owns(tmp_path: Path) -> None:
    theirs = tmp_path / "theirs"
    theirs.mkdir(0o700)
    given_to_nobody(theirs)
    with pytest.raises(PermissionError, match="owned by uid"):
        check_private_dir(str(theirs / "admin.sock"), "admin socket")


def test_a_symlink_is_not_followed(tmp_path: Path) -> None:
    target = tmp_path / "elsewhere"
    target.write_bytes(b"untouched")
    target.chmod(0o644)
    link = tmp_path / "log"
    link.symlink_to(target)
    for opener in (open_append, open_new):
        with pytest.raises(StorageError, match=f"file {link}: it is a symbolic link"):
            opener(link)
    assert target.read_bytes() == b"untouched" and mode(target) == 0o644


def test_a_parent_others_may_write_is_refused_a_sticky_one_is_not(tmp_path: Path) -> None:
    open_to_all = tmp_path / "open"
    open_to_all.mkdir()
    open_to_all.chmod(0o777)
    with pytest.raises(StorageError, match=f"directory {open_to_all}: others may write"):
        private_dir(open_to_all / "data")
    assert not (open_to_all / "data").exists()
    open_to_all.chmod(0o1777)  # as /tmp: others cannot rename what is ours
    assert mode(private_dir(open_to_all / "data")) == 0o700

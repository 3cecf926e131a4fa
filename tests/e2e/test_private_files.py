"""Files with state or secrets are private (0700 directories, 0600 files) from the
moment they exist, whatever the umask: a server's Raft log and snapshot, `meshlet up`'s
home, state and log, an agent's container logs. What an older version left wider is
tightened on start. As root, an unprivileged user (`nobody`) is refused them."""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import stat
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import management_token
from tests.e2e.helpers import downed, env_for, free_port, meshlet, wait_for


def wide(root: Path) -> dict[str, str]:
    """Every directory and file under ``root`` (itself too) that its group or others
    may read, write or enter."""
    found = {}
    for path in [root, *root.rglob("*")]:
        mode = os.lstat(path).st_mode
        if not stat.S_ISLNK(mode) and mode & 0o077:
            found[str(path.relative_to(root.parent))] = oct(stat.S_IMODE(mode))
    return found


@contextlib.contextmanager
def umask(mask: int) -> Iterator[None]:
    """Children started meanwhile inherit ``mask``: with 0, private modes come from
    meshlet's code alone."""
    old = os.umask(mask)
    try:
        yield
    finally:
        os.umask(old)


@pytest.fixture
def base() -> Iterator[Path]:
    """A directory any user may enter (pytest's tmp_path is private to root, which
    would hide what meshlet's own modes do)."""
    path = Path(tempfile.mkdtemp(prefix="meshlet-private-"))
    path.chmod(0o755)
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def start_server(data: Path, home: Path) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    with umask(0):
        proc = subprocess.Popen([sys.executable, "-m", "meshlet", "server", "--data-dir",
                                 str(data), "--http", f"127.0.0.1:{port}",
                                 "--snapshot-every", "5", "--snapshot-interval", "0s"],
                                env=env_for(home), stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL)
    addr = f"http://127.0.0.1:{port}"
    try:
        wait_for(lambda: cli(addr, data, home, "status", check=False).returncode == 0, 20,
                 "the server")
    except BaseException:
        stop(proc)  # a server that never answered is not left running
        raise
    return proc, addr


def cli(addr: str, data: Path, home: Path, *args: str,
        check: bool = True) -> subprocess.CompletedProcess[str]:
    """The CLI against the server on ``data``, with its management token."""
    return meshlet("--addr", addr, "--token", management_token(data), *args, home=home,
                   check=check)


def stop(proc: subprocess.Popen[bytes]) -> None:
    proc.terminate()
    proc.wait(10)


def test_a_servers_log_and_snapshot_are_private_and_old_modes_are_tightened(
        base: Path) -> None:
    home = base / "home"
    data = home / "data"  # where env_for finds its management token
    proc, addr = start_server(data, home)
    try:
        for i in range(20):
            cli(addr, data, home, "kv", "put", f"k{i}", "secret")
        wait_for(lambda: list(data.rglob("snapshot.bin")), 20, "a snapshot")
    finally:
        stop(proc)
    assert list(data.rglob("*.wal")) and wide(data) == {}

    # As an older version left them: everything readable by all.
    for path in [data, *data.rglob("*")]:
        path.chmod(0o755 if path.is_dir() else 0o644)
    assert wide(data)
    proc, addr = start_server(data, home)
    try:
        assert wide(data) == {}
        assert cli(addr, data, home, "kv", "get", "k19").stdout == "secret\n"
    finally:
        stop(proc)


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root: runs a command as `nobody`")
def test_an_unprivileged_user_cannot_read_the_log(base: Path) -> None:
    home = base / "home"
    data = home / "data"  # where env_for finds its management token
    proc, addr = start_server(data, home)
    try:
        cli(addr, data, home, "kv", "put", "password", "hunter2")
    finally:
        stop(proc)
    control = base / "public.txt"
    control.write_text("anyone may read this")
    control.chmod(0o644)

    def as_nobody(*argv: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(argv, user="nobody", group="nogroup", capture_output=True,
                              text=True, timeout=30, check=False)
    assert as_nobody("cat", str(control)).returncode == 0  # the test can tell
    files = [p for p in data.rglob("*") if p.is_file()]
    assert any(p.suffix == ".wal" for p in files)
    for path in files:
        denied = as_nobody("cat", str(path))
        assert denied.returncode != 0 and "Permission denied" in denied.stderr, path
        assert "hunter2" not in denied.stdout
    assert as_nobody("ls", str(data)).returncode != 0


def test_meshlet_up_keeps_its_home_data_and_container_logs_private(base: Path) -> None:
    """Needs `meshlet up`: run it under flock with the other tests that do."""
    home, data = base / "home", base / "up-data"
    with downed(home):
        with umask(0):
            meshlet("up", "--detach", "--data-dir", str(data), "--http",
                    f"127.0.0.1:{free_port()}", home=home)
            meshlet("run", "-d", "--name", "hello", "--", "sh", "-c", "echo hi from hello",
                    home=home)
        wait_for(lambda: meshlet("logs", "hello", home=home, check=False).stdout ==
                 "hi from hello\n", 20, "the container's output")
        assert (data / "agent" / "containers" / "hello.log").exists()
        assert (home / "up.json").exists() and (home / "up.log").exists()
        assert wide(home) == {} and wide(data) == {}


def refused_start(data: Path, home: Path) -> str:
    """``meshlet server`` on ``data``, which must refuse to start: its stderr."""
    proc = subprocess.run([sys.executable, "-m", "meshlet", "server", "--data-dir", str(data),
                           "--http", f"127.0.0.1:{free_port()}"], env=env_for(home),
                          capture_output=True, text=True, timeout=60, check=False)
    assert proc.returncode == 1, proc.stderr
    assert "Traceback" not in proc.stderr and len(proc.stderr.strip().splitlines()) == 1
    return proc.stderr


def as_nobody(*argv: str) -> None:
    subprocess.run(argv, user="nobody", group="nogroup", check=True, timeout=30)


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root: files made by `nobody`")
def test_the_server_refuses_a_data_dir_or_a_log_another_user_made(base: Path) -> None:
    home = base / "home"
    theirs = base / "theirs"
    log = theirs / "raft" / "raft-log" / "log-00000000000000000001.wal"
    theirs.mkdir()
    os.chown(theirs, pwd.getpwnam("nobody").pw_uid, -1)  # as if nobody made it in /tmp
    as_nobody("mkdir", "-p", "-m", "777", str(log.parent))
    as_nobody("sh", "-c", f"chmod 777 {theirs} {theirs}/raft && touch {log} && chmod 666 {log}")
    assert f"directory {theirs}: it is owned by nobody" in refused_start(theirs, home)
    assert os.stat(log).st_uid != 0 and log.read_bytes() == b"" and mode(log) == 0o666

    ours = base / "ours"  # root's own directory, with nobody's log planted in it
    (ours / "raft" / "raft-log").mkdir(parents=True)
    shutil.copy2(log, ours / "raft" / "raft-log" / log.name)
    os.chown(ours / "raft" / "raft-log" / log.name, os.stat(log).st_uid, -1)
    assert f"{log.name}: it is owned by nobody" in refused_start(ours, home)
    assert (ours / "raft" / "raft-log" / log.name).read_bytes() == b""


def mode(path: Path) -> int:
    return stat.S_IMODE(os.lstat(path).st_mode)


def test_the_server_refuses_a_symlinked_log(base: Path) -> None:
    home, data = base / "home", base / "data"
    (data / "raft" / "raft-log").mkdir(parents=True)
    target = base / "elsewhere"
    target.write_bytes(b"not a log")
    (data / "raft" / "raft-log" / "log-00000000000000000001.wal").symlink_to(target)
    assert "wal: a symbolic link in a data directory" in refused_start(data, home)
    assert target.read_bytes() == b"not a log"

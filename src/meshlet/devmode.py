"""``meshlet up``: an embedded server and agent in one process, plus the file's workloads.

Foreground: runs until SIGINT/SIGTERM, then stops workloads (callers first), the agent,
the server, and removes its temporary data directory. ``--detach`` re-runs the same
command in the background and records it in ``$MESHLET_HOME/up.json`` for ``down``.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from meshlet.errors import ConfigError, MeshletError, Unavailable

if TYPE_CHECKING:  # imported where used: every CLI command loads this module
    from meshlet.agent.agent import Agent
    from meshlet.deploy.manifest import Manifest

log = logging.getLogger(__name__)
DEFAULT_HTTP = "127.0.0.1:8470"


def meshlet_home() -> Path:
    return Path(os.environ.get("MESHLET_HOME", Path.home() / ".meshlet"))


def state_file() -> Path:
    return meshlet_home() / "up.json"


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def read_state() -> dict[str, Any] | None:
    """The running ``up --detach`` record, or None; a stale record is removed."""
    path = state_file()
    try:
        state: dict[str, Any] = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    if not pid_alive(int(state.get("pid", 0))):
        path.unlink(missing_ok=True)
        return None
    return state


TEMP_PREFIX = "meshlet-up-"


def sweep_stale_temp_dirs() -> None:
    """Remove the data directories of `up` runs that were killed (-9) before they
    could remove their own; each records the pid that owns it."""
    for path in Path(tempfile.gettempdir()).glob(TEMP_PREFIX + "*"):
        try:
            owner = int((path / "owner.pid").read_text())
        except (OSError, ValueError):
            continue  # not ours to judge (or still being created)
        if not pid_alive(owner):
            log.info("removing %s, left by a killed `meshlet up`", path)
            shutil.rmtree(path, ignore_errors=True)


def summary(agent: Agent, api_url: str) -> list[dict[str, Any]]:
    return [{"service": w.service, "instance": w.id,
             "address": f"{w.app_host}:{w.inbound_port}", "app_port": w.app_port,
             "admin": w.admin_url} for w in agent.workloads]


async def run_up(manifest: Manifest | None, cwd: Path, host: str, port: int,
                 data_dir: Path | None, on_ready: Callable[[str, list[dict[str, Any]]], None]
                 ) -> None:
    """Run until signalled. Raises MeshletError (e.g. the API port is taken)."""
    from meshlet.agent.agent import Agent
    from meshlet.security.secret_file import read_or_create_secret
    from meshlet.server.main import Server, ServerOptions
    temp_dir = None
    if data_dir is None:
        sweep_stale_temp_dirs()
        temp_dir = Path(tempfile.mkdtemp(prefix=TEMP_PREFIX))
        (temp_dir / "owner.pid").write_text(str(os.getpid()))
        data_dir = temp_dir
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    server = agent = None
    try:
        try:
            # A cluster of one still has its own join token, ready for a second server.
            join_token = read_or_create_secret(data_dir / "join.token")
            server = await Server.start(data_dir / "server", host, port,
                                        ServerOptions(join_token=join_token))
        except OSError as exc:
            raise Unavailable(f"cannot serve the API on {host}:{port}: {exc.strerror}; "
                              "is another meshlet running? (use --http to pick a port)"
                              ) from None
        agent = Agent(server.url, data_dir / "agent", os.uname().nodename)
        agent.run_containers()
        if manifest is not None:
            start = loop.create_task(agent.start(manifest, cwd))
            stopper = loop.create_task(stop.wait())
            await asyncio.wait({start, stopper}, return_when=asyncio.FIRST_COMPLETED)
            stopper.cancel()
            if not start.done():
                start.cancel()
            elif (failure := start.exception()) is not None:
                if isinstance(failure, asyncio.TimeoutError):
                    raise Unavailable("workloads did not start in time; see logs in "
                                      f"{data_dir / 'agent' / 'workloads'}")
                raise failure
        if not stop.is_set():
            on_ready(server.url, summary(agent, server.url))
            await stop.wait()
    finally:
        if agent is not None:
            await agent.stop()
        if server is not None:
            await server.stop()
        if temp_dir is not None:
            shutil.rmtree(temp_dir, ignore_errors=True)


def load(file: str | None) -> tuple[Manifest | None, Path]:
    from meshlet.deploy.manifest import load_manifest
    if file is None:
        return None, Path.cwd()
    path = Path(file)
    return load_manifest(path), path.resolve().parent


def detach(argv: list[str], timeout: float = 60.0) -> dict[str, Any]:
    """Start ``meshlet up`` in the background and wait until it reports ready."""
    if read_state() is not None:
        raise ConfigError(f"meshlet is already running (see {state_file()}); "
                          "run 'meshlet down' first")
    home = meshlet_home()
    home.mkdir(parents=True, exist_ok=True)
    log_path = home / "up.log"
    with open(log_path, "wb") as log_file:
        proc = subprocess.Popen([sys.executable, "-m", "meshlet", *argv],
                                stdin=subprocess.DEVNULL, stdout=log_file,
                                stderr=subprocess.STDOUT, start_new_session=True,
                                env={**os.environ, "MESHLET_DETACHED": "1"})
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        state = read_state()
        if state is not None and state.get("pid") == proc.pid:
            return state
        if proc.poll() is not None:
            tail = log_path.read_text(errors="replace").strip().splitlines()[-5:]
            raise Unavailable("meshlet up failed: " + (" / ".join(tail) or "no output"))
        time.sleep(0.05)
    proc.terminate()
    raise Unavailable(f"meshlet up did not become ready in {timeout:.0f}s; see {log_path}")


def write_state(api: str, workloads: list[dict[str, Any]]) -> None:
    home = meshlet_home()
    home.mkdir(parents=True, exist_ok=True)
    tmp = home / "up.json.tmp"
    tmp.write_text(json.dumps({"pid": os.getpid(), "api": api, "workloads": workloads}))
    os.replace(tmp, state_file())


def clear_state() -> None:
    try:
        state = json.loads(state_file().read_text())
    except (OSError, ValueError):
        return
    if state.get("pid") == os.getpid():
        state_file().unlink(missing_ok=True)


def down(timeout: float = 60.0) -> int | None:
    """Stop the background ``up``; returns its pid, or None if nothing was running."""
    state = read_state()
    if state is None:
        return None
    pid = int(state["pid"])
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while pid_alive(pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    if pid_alive(pid):
        os.killpg(pid, signal.SIGKILL)
        raise MeshletError(f"meshlet up (pid {pid}) did not stop in {timeout:.0f}s; killed")
    state_file().unlink(missing_ok=True)
    return pid

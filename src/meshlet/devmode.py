"""``meshlet up``: an embedded server and agent in one process, plus the file's workloads.

Foreground: runs until SIGINT/SIGTERM, then stops workloads (callers first), the agent,
the server, and removes its temporary data directory. ``--detach`` re-runs the same
command in the background and records it in ``$MESHLET_HOME/up.json`` for ``down``:
its pid with the start time and command line that make it that process (``down``
signals it only while they still match, through a pidfd), its API and its agent's
directory. ``$MESHLET_HOME`` and the data directories are 0700, what is in them 0600.
command in the background and records it in ``$MESHLET_HOME/up.json`` for ``down``.

Access control: the embedded server founds its cluster and writes its management
token (0600) in its data directory; ``$MESHLET_HOME/up-token.json`` (0600) says where,
so the CLI of the same user (root, usually) finds it without ``--token``. The agent
runs with a token of its own (policy ``agent``), handed to it in memory.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import select
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
from meshlet.private_files import (
    open_new,
    private_dir,
    read_or_create_secret,
    read_secret,
    write_private,
    write_secret,
)
from meshlet.process_identity import identity, matches, own_identity

if TYPE_CHECKING:  # imported where used: every CLI command loads this module
    from meshlet.agent.agent import Agent
    from meshlet.deploy.manifest import Manifest

log = logging.getLogger(__name__)
DEFAULT_HTTP = "127.0.0.1:8470"
DEFAULT_AGENT_METRICS = "127.0.0.1:0"  # any free port: `prometheus-sd` finds it


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


def is_meshlet_up(cmdline: list[str] | tuple[str, ...]) -> bool:
    """``python -m meshlet up …``, as ``detach`` starts it."""
    return list(cmdline[1:4]) == ["-m", "meshlet", "up"]


def is_running_up(state: dict[str, Any]) -> bool:
    """Whether the record's process still runs and is the ``meshlet up`` recorded (a
    pid alone could have been reused by any process since)."""
    pid = state.get("pid")
    return isinstance(pid, int) and matches(state, identity(pid)) \
        and is_meshlet_up(state.get("cmdline", []))


def read_state() -> dict[str, Any] | None:
    """The running ``up --detach`` record, or None; a stale record is removed."""
    path = state_file()
    try:
        state: dict[str, Any] = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(state, dict) or not is_running_up(state):
        path.unlink(missing_ok=True)
        return None
    return state


def agent_dir() -> Path:
    """Where this machine's agent keeps its data: the running ``up``'s, else the
    default of ``meshlet agent``."""
    state = read_state()
    if state is not None and isinstance(state.get("agent_dir"), str):
        return Path(state["agent_dir"])
    return meshlet_home() / "agent"


def images_dir() -> Path:
    """This machine's image store: the running ``up``'s, else the one of ``meshlet
    agent``'s default data directory (where an ``up`` without ``--data-dir`` keeps its
    images too, so that they outlive it)."""
    state = read_state()
    if state is not None and isinstance(state.get("images_dir"), str):
        return Path(state["images_dir"])
    return meshlet_home() / "agent" / "images"


TEMP_PREFIX = "meshlet-up-"
AGENT_POLICY = "agent"
# What an agent does besides acting for its own node (its token's node identity:
# registering the node, reading and reporting the containers placed on it): registers
# its services' instances and their health, creates and addresses networks, and reads
# the nodes, containers (for names and overlay peers), config and the Kubernetes objects
# (Services it publishes; its pods it reads as their node). Not `container`
# write: that would let one agent start a command on every node.
AGENT_RULES = [{"kind": kind, "prefix": "", "access": "write"}
               for kind in ("service", "network")] + [
    {"kind": kind, "prefix": "", "access": "read"}
    for kind in ("node", "container", "config", "deployment")]


def token_record() -> Path:
    return meshlet_home() / "up-token.json"


def local_token(addr: str) -> str | None:
    """The management token of the ``meshlet up`` serving ``addr`` on this machine, if
    this user may read it; else None (the request then gets a 401 that says why)."""
    from meshlet.addresses import to_url
    try:
        record = json.loads(token_record().read_text())
        if not pid_alive(int(record["pid"])) or to_url(record["api"]) != to_url(addr):
            return None
        return read_secret(Path(record["token_file"]))
    except (OSError, ValueError, KeyError, TypeError, MeshletError):
        return None


async def wait_for_file(path: Path, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        if time.monotonic() > deadline:
            raise Unavailable(f"the server wrote no management token to {path} in "
                              f"{timeout:.0f}s; is it the leader?")
        await asyncio.sleep(0.02)


async def agent_token(api: str, management: str, path: Path, node: str) -> str:
    """The agent's token kept in ``path`` if the server still knows it as one acting
    for ``node``, else a new one, with the agent policy (made, or brought up to date)."""
    from meshlet.api.client import Client
    from meshlet.errors import NotLeader, Unauthenticated
    async with Client(api, token=management) as client:
        deadline = time.monotonic() + 30
        while True:  # a restarted server leads (and knows its tokens) a moment later
            try:
                await client.token_self()
                break
            except NotLeader:
                if time.monotonic() > deadline:
                    raise
                await asyncio.sleep(0.02)
        await client.policy_create(AGENT_POLICY, AGENT_RULES,
                                   "what `meshlet up`'s agent needs")
    kept = read_secret(path)
    stale = None
    if kept is not None:
        async with Client(api, token=kept) as client:
            try:
                found = await client.token_self()
                if found.get("node_identities") == [node]:
                    return kept
                stale = found["accessor"]  # another node's, or an older version's
            except Unauthenticated:
                pass  # deleted: make another
    async with Client(api, token=management) as client:
        if stale is not None:
            await client.token_delete(stale)
        made = await client.token_create([AGENT_POLICY], "meshlet up's agent",
                                         node_identities=[node])
    write_secret(path, made["secret"])
    return str(made["secret"])


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
            from meshlet.runtime.rootfs import unmount_all
            unmount_all(path)  # its containers' root filesystems, first
            shutil.rmtree(path, ignore_errors=True)


def summary(agent: Agent, api_url: str) -> list[dict[str, Any]]:
    """Each workload, then each service the ingress gateway publishes (``ingress``:
    where a client outside the mesh calls it, in plaintext)."""
    rows = [{"service": w.service, "instance": w.id,
             "address": f"{w.app_host}:{w.inbound_port}", "app_port": w.app_port,
             "admin": w.admin_url, "metrics": w.metrics_url, "ingress": False}
            for w in agent.workloads]
    if agent.ingress is not None:
        rows += [{"service": name, "instance": "ingress-gateway", "address": address,
                  "app_port": None, "admin": None, "metrics": None, "ingress": True}
                 for name, address in sorted(agent.ingress.addresses().items())]
    return rows


async def run_up(manifest: Manifest | None, cwd: Path, host: str, port: int,
                 data_dir: Path | None,
                 on_ready: Callable[[str, list[dict[str, Any]], Path, Path], None],
                 default_intention: str = "allow",
                 agent_metrics: tuple[str, int] | None = None) -> None:
    """Run until signalled. Raises MeshletError (e.g. the API port is taken).
    ``agent_metrics``: where the agent serves its /metrics (None: nowhere)."""
    from meshlet.agent.agent import Agent
    from meshlet.loop import freeze_startup_heap, raise_descriptor_limit
    from meshlet.server.main import Server, ServerOptions
    temp_dir = None
    if data_dir is None:
        sweep_stale_temp_dirs()
        temp_dir = Path(tempfile.mkdtemp(prefix=TEMP_PREFIX))  # 0700
        write_private(temp_dir / "owner.pid", str(os.getpid()))
        data_dir = temp_dir
    private_dir(data_dir)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    server = agent = None
    try:
        try:
            # A cluster of one still has its own join token, ready for a second server.
            join_token = read_or_create_secret(data_dir / "join.token")
            raise_descriptor_limit()  # each agent holds connections to the server
            server = await Server.start(data_dir / "server", host, port,
                                        ServerOptions(join_token=join_token,
                                                      default_intention=default_intention))
        except OSError as exc:
            raise Unavailable(f"cannot serve the API on {host}:{port}: {exc.strerror}; "
                              "is another meshlet running? (use --http to pick a port)"
                              ) from None
        await wait_for_file(server.acl.path)
        write_secret(token_record(), json.dumps({
            "pid": os.getpid(), "api": server.url, "token_file": str(server.acl.path)}))
        node = os.uname().nodename
        token = await agent_token(server.url, server.acl.path.read_text().strip(),
                                  data_dir / "agent.token", node)
        agent = Agent(server.url, data_dir / "agent", node, token=token,
                      images_dir=meshlet_home() / "agent" / "images" if temp_dir
                      else data_dir / "agent" / "images")
        if agent_metrics is not None:
            try:
                await agent.serve_metrics(*agent_metrics)
            except OSError as exc:
                raise Unavailable(f"{exc.strerror or exc} (use --agent-metrics-addr to "
                                  "pick another)") from None
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
            freeze_startup_heap()
            on_ready(server.url, summary(agent, server.url), data_dir / "agent",
                     agent.containers.images.store.root)
            await stop.wait()
    finally:
        if agent is not None:
            await agent.stop()
        if server is not None:
            await server.stop()
        clear_token_record()
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
    home = private_dir(meshlet_home())
    log_path = home / "up.log"
    with open_new(log_path) as log_file:
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


def write_state(api: str, workloads: list[dict[str, Any]], agent: Path,
                images: Path) -> None:
    private_dir(meshlet_home())
    write_private(state_file(), json.dumps({**own_identity().to_dict(), "api": api,
                                            "workloads": workloads,
                                            "agent_dir": str(agent.resolve()),
                                            "images_dir": str(images.resolve())}))


def clear_state() -> None:
    try:
        state = json.loads(state_file().read_text())
    except (OSError, ValueError):
        return
    if state.get("pid") == os.getpid():
        state_file().unlink(missing_ok=True)


def clear_token_record() -> None:
    try:
        record = json.loads(token_record().read_text())
    except (OSError, ValueError):
        return
    if isinstance(record, dict) and record.get("pid") == os.getpid():
        token_record().unlink(missing_ok=True)


def down(timeout: float = 60.0) -> int | None:
    """Stop the background ``up``; returns its pid, or None if nothing was running
    (a record whose pid is now another process is removed, that process untouched)."""
    state = read_state()
    if state is None:
        return None
    pid = int(state["pid"])
    try:
        pidfd = os.pidfd_open(pid)  # pins the process: checked below, then signalled
    except ProcessLookupError:
        state_file().unlink(missing_ok=True)
        return None
    try:
        if not is_running_up(state):  # it exited between reading and pinning
            state_file().unlink(missing_ok=True)
            return None
        signal.pidfd_send_signal(pidfd, signal.SIGTERM)
        if not select.select([pidfd], [], [], timeout)[0]:  # readable once it exits
            signal.pidfd_send_signal(pidfd, signal.SIGKILL)
            with contextlib.suppress(ProcessLookupError):  # its group (the leader's id)
                os.killpg(pid, signal.SIGKILL)
            raise MeshletError(f"meshlet up (pid {pid}) did not stop in {timeout:.0f}s; "
                               "killed")
    finally:
        os.close(pidfd)
    state_file().unlink(missing_ok=True)
    return pid

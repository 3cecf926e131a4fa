"""Containers under runc: one bundle per container (``config.json`` and the overlay
rootfs in the container's directory), run in the foreground so that the agent holds
the runc process, reads the container's exit status from it and hands its output to
the container's log.

runc keeps its state under the agent's own ``--root``, so listing it finds exactly
this agent's containers: what a killed agent left running is killed and deleted when
it starts again (``Runc.sweep``). Stopping sends SIGTERM through runc, then SIGKILL
after the grace period: a PID 1 without a handler ignores SIGTERM, as under Docker.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import shutil
import signal
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from meshlet.errors import MeshletError
from meshlet.private_files import private_dir, write_private
from meshlet.processes import spawn, terminate
from meshlet.runtime import rootfs
from meshlet.runtime.oci_spec import ContainerConfig, runtime_config

log = logging.getLogger(__name__)
CGROUP_PARENT = "meshlet"
CGROUP_ROOT = Path("/sys/fs/cgroup")
COMMAND_TIMEOUT = 30.0


def runc_binary() -> str:
    found = shutil.which("runc")
    if found is None:
        raise MeshletError("running an image needs runc (Debian: apt-get install runc)")
    return found


def cgroup_path(container_id: str) -> str:
    return f"/{CGROUP_PARENT}/{container_id}"


@dataclass
class ContainerProcess:
    """A container running in the foreground of its runc process."""

    runc: Runc
    id: str
    process: asyncio.subprocess.Process
    bundle: Path

    @property
    def pid(self) -> int:
        return self.process.pid

    @property
    def returncode(self) -> int | None:
        return self.process.returncode

    async def wait(self) -> int:
        return await self.process.wait()

    async def terminate(self, grace: float = 10.0) -> int:
        """SIGTERM, then SIGKILL after ``grace`` seconds; return the exit status."""
        if self.process.returncode is None and grace <= 0:
            await self.runc.kill(self.id, signal.SIGKILL)
        elif self.process.returncode is None:
            await self.runc.kill(self.id, signal.SIGTERM)
            try:
                return await asyncio.wait_for(asyncio.shield(self.process.wait()), grace)
            except TimeoutError:
                await self.runc.kill(self.id, signal.SIGKILL)
        try:
            return await asyncio.wait_for(asyncio.shield(self.process.wait()),
                                          COMMAND_TIMEOUT)
        except TimeoutError:  # runc itself hung: kill it, then forget the container
            self.process.kill()
            code = await self.process.wait()
            await self.runc.delete(self.id)
            return code


async def stop_process(process: asyncio.subprocess.Process | ContainerProcess,
                       grace: float) -> int:
    """SIGTERM, SIGKILL after ``grace`` seconds (a plain process's whole group, or a
    container through runc); the exit status."""
    if isinstance(process, ContainerProcess):
        return await process.terminate(grace)
    return await terminate(process, grace)


class Runc:
    """The runc command line, with this agent's state directory."""

    def __init__(self, state_dir: Path, binary: str | None = None) -> None:
        self.state_dir = state_dir
        self.binary = binary or runc_binary()

    def __repr__(self) -> str:
        return f"<Runc {self.state_dir}>"

    def argv(self, *args: str) -> list[str]:
        return [self.binary, "--root", str(self.state_dir), *args]

    async def call(self, *args: str, check: bool = True) -> tuple[int, str]:
        """Run one runc command to completion; raises MeshletError if ``check`` and it
        fails."""
        proc = await asyncio.create_subprocess_exec(
            *self.argv(*args), stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
        try:
            out, _ = await asyncio.wait_for(proc.communicate(), COMMAND_TIMEOUT)
        except TimeoutError:
            proc.kill()
            await proc.wait()
            raise MeshletError(f"runc {args[0]} did not answer in {COMMAND_TIMEOUT:g}s") \
                from None
        text = out.decode(errors="replace").strip()
        if check and proc.returncode != 0:
            raise MeshletError(f"runc {args[0]} failed: {last_message(text)}")
        return proc.returncode or 0, text

    async def start(self, container_id: str, bundle: Path, config: ContainerConfig,
                    log_path: Path) -> ContainerProcess:
        """Write the bundle's ``config.json`` and run the container in the foreground,
        its output appended to ``log_path``. A container of the same id left over from
        an earlier run is deleted first."""
        private_dir(self.state_dir)
        write_private(bundle / "config.json", json.dumps(runtime_config(config), indent=1))
        await self.delete(container_id)
        process = await spawn(self.argv("run", "--bundle", str(bundle), "--no-new-keyring",
                                        container_id),
                              {"PATH": os.environ.get("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")},
                              bundle, log_path)
        return ContainerProcess(self, container_id, process, bundle)

    async def kill(self, container_id: str, sig: int) -> None:
        """Signal the container's init; one that is not running is fine."""
        await self.call("kill", container_id, str(int(sig)), check=False)

    async def delete(self, container_id: str) -> None:
        """Forget the container (killing what runs); absent is fine."""
        await self.call("delete", "--force", container_id, check=False)

    async def ids(self) -> list[str]:
        """The containers runc knows under this agent's state directory."""
        if not self.state_dir.exists():
            return []
        _, out = await self.call("list", "--format", "json")
        listed: Any = json.loads(out or "null") or []
        return sorted(str(c["id"]) for c in listed if isinstance(c, dict) and "id" in c)

    async def state(self, container_id: str) -> dict[str, Any] | None:
        code, out = await self.call("state", container_id, check=False)
        if code != 0:
            return None
        found: Any = json.loads(out)
        return found if isinstance(found, dict) else None

    async def sweep(self, prefix: str, keep: Sequence[str] = ()) -> list[str]:
        """Kill and delete this agent's containers whose id starts with ``prefix`` (all
        but ``keep``): what an agent killed with -9 left running."""
        gone = []
        for container_id in await self.ids():
            if container_id.startswith(prefix) and container_id not in keep:
                await self.kill(container_id, signal.SIGKILL)
                await self.delete(container_id)
                gone.append(container_id)
        if gone:
            log.info("removed containers left by an earlier run: %s", ", ".join(gone))
        return gone

    def exec_argv(self, container_id: str, command: Sequence[str], env: Sequence[str] = (),
                  tty: bool = False, user: str = "", cwd: str = "") -> list[str]:
        """The command line that runs ``command`` in every namespace of the container."""
        args = ["exec"]
        if tty:
            args.append("--tty")
        for pair in env:
            args += ["--env", pair]
        if user:
            args += ["--user", user]
        if cwd:
            args += ["--cwd", cwd]
        return self.argv(*args, container_id, *command)


def last_message(text: str) -> str:
    """runc's own error line (``msg="..."`` of its last log line), or the text."""
    for line in reversed(text.splitlines()):
        if 'msg="' in line:
            return line.split('msg="', 1)[1].rsplit('"', 1)[0]
    return text.splitlines()[-1] if text else "no output"


def cpu_seconds(container_id: str) -> float | None:
    """CPU time the container's processes have used so far (cgroup v1 ``cpuacct.usage``,
    else v2 ``cpu.stat``); None when its cgroup cannot be read."""
    path = cgroup_path(container_id).lstrip("/")
    try:
        return int((CGROUP_ROOT / "cpuacct" / path / "cpuacct.usage").read_text()) / 1e9
    except (OSError, ValueError):
        pass
    try:
        stat = (CGROUP_ROOT / path / "cpu.stat").read_text()
    except OSError:
        return None
    for line in stat.splitlines():
        key, _, value = line.partition(" ")
        if key == "usage_usec" and value.strip().isdigit():
            return int(value) / 1e6
    return None


def remove_cgroup_parents() -> None:
    """Remove meshlet's (empty) parent cgroup in each hierarchy; runc removes each
    container's own."""
    for hierarchy in (CGROUP_ROOT.iterdir() if CGROUP_ROOT.exists() else ()):
        parent = hierarchy / CGROUP_PARENT
        try:
            parent.rmdir()
        except OSError:
            pass


def leftover_cgroups(container_id_prefix: str) -> list[str]:
    """Container cgroups with this prefix still present in any hierarchy."""
    found = []
    for hierarchy in (CGROUP_ROOT.iterdir() if CGROUP_ROOT.exists() else ()):
        parent = hierarchy / CGROUP_PARENT
        if parent.is_dir():
            found += [str(p) for p in parent.iterdir()
                      if p.is_dir() and p.name.startswith(container_id_prefix)]
    return sorted(found)


__all__ = ["ContainerProcess", "Runc", "cgroup_path", "cpu_seconds", "rootfs"]

"""`meshlet run`, `ps`, `logs`, `exec`, `stop` and `rm`: containers as `docker` runs
them, each in its own network namespace on the networks it names.

A container's output is read from the file this machine's agent writes,
``AGENT_DIR/containers/NAME.log``, named here from the container's name: the ``log``
path in the API is not trusted (whoever can write to the API could point it at any
file, and `meshlet logs` often runs as root). The file must resolve inside that
directory and is opened without following a symlink.
"""

from __future__ import annotations

import os
import stat
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, BinaryIO

import click

from meshlet import devmode
from meshlet.api.client import Client
from meshlet.cli.context import Context, pass_ctx
from meshlet.cli.render import emit_json, table
from meshlet.errors import ConfigError, Conflict, MeshletError

START_TIMEOUT = 30.0


@click.command(context_settings={"ignore_unknown_options": False})
@click.option("-d", "--detach", is_flag=True, help="Return once it runs; do not follow it.")
@click.option("--name", required=True, help="The container's name.")
@click.option("--network", "networks", multiple=True, metavar="NET",
              help="A network to join (repeat for more; default: the host's network).")
@click.option("-p", "--publish", "ports", multiple=True, metavar="[IP:]HOSTPORT:PORT",
              help="Forward a host port to the container.")
@click.option("-e", "--env", "env_pairs", multiple=True, metavar="K=V")
@click.option("--node", default=None, help="The agent's node (default: this host).")
@click.argument("command", nargs=-1, required=True)
@pass_ctx
def run(ctx: Context, detach: bool, name: str, networks: tuple[str, ...],
        ports: tuple[str, ...], env_pairs: tuple[str, ...], node: str | None,
        command: tuple[str, ...]) -> None:
    """Run COMMAND in a new container (put `--` before it)."""
    env = {}
    for pair in env_pairs:
        key, sep, value = pair.partition("=")
        if not sep:
            raise ConfigError(f"--env {pair!r}: expected K=V", "env")
        env[key] = value

    async def start(client: Client) -> dict[str, Any]:
        await client.container_create(name, list(command), node or os.uname().nodename,
                                      env, list(networks), list(ports))
        return await client.wait_container(name, ("created",), START_TIMEOUT)
    body = ctx.call(start)
    if body["status"] == "failed":
        raise MeshletError(f"container {name!r} failed to start: {body['detail']}")
    if detach:
        click.echo(name)
        return
    code = follow(ctx, name, log_path(name))
    sys.exit(code or 0)


def log_path(name: str, data_dir: str | None = None) -> Path:
    """Where this machine's agent writes container ``name``'s output."""
    if not name or "/" in name or name in (".", "..") or "\0" in name:
        raise ConfigError(f"{name!r} is not a container name", "name")
    agent = Path(data_dir) if data_dir else devmode.agent_dir()
    return agent / "containers" / f"{name}.log"


def within(path: str, directory: str) -> bool:
    return os.path.commonpath([path, directory]) == directory


@contextmanager
def open_log(log: Path) -> Iterator[BinaryIO | None]:
    """The log opened for reading, or None if there is none (yet). Raises ConfigError
    for one that resolves outside its directory, is a symlink or is not a file."""
    real, directory = os.path.realpath(log), os.path.realpath(log.parent)
    if not within(real, directory):
        raise ConfigError(f"refusing to read {log}: it resolves to {real}, outside the "
                          f"agent's containers directory {directory}", "name")
    try:
        fd = os.open(log, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except FileNotFoundError:
        yield None
        return
    except OSError as exc:  # ELOOP: a symlink in the last place
        raise ConfigError(f"refusing to read {log}: {exc.strerror}", "name") from None
    with os.fdopen(fd, "rb") as f:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise ConfigError(f"refusing to read {log}: not a regular file", "name")
        yield f


def follow(ctx: Context, name: str, log: Path) -> int | None:
    """Print the log as it grows until the container exits; return its exit code."""
    offset = 0
    while True:
        offset = print_from(log, offset)
        body, _ = ctx.call(lambda c: c.container(name))
        if body["status"] != "running":
            print_from(log, offset)
            return body["exit_code"]
        time.sleep(0.2)


def print_from(log: Path, offset: int) -> int:
    with open_log(log) as f:
        if f is None:
            return offset
        f.seek(offset)
        data = f.read()
    sys.stdout.write(data.decode(errors="replace"))
    sys.stdout.flush()
    return offset + len(data)


@click.command()
@click.option("-a", "--all", "show_all", is_flag=True, help="Also those not running.")
@pass_ctx
def ps(ctx: Context, show_all: bool) -> None:
    """List containers."""
    rows, _ = ctx.call(lambda c: c.containers())
    rows = [r for r in rows if show_all or r["status"] == "running"]
    if ctx.json:
        emit_json(rows)
        return
    table([(r["name"], r["node"], describe(r),
            " ".join(f"{n}={a}" for n, a in r["addresses"].items())
            or ",".join(r["networks"]) or "host",
            " ".join(r["ports"]), " ".join(r["command"])[:40]) for r in rows],
          ["NAME", "NODE", "STATUS", "NETWORKS", "PORTS", "COMMAND"])


def describe(container: dict[str, Any]) -> str:
    status = container["status"]
    if status == "running":
        return f"running (pid {container['pid']})"
    if status == "exited":
        return f"exited ({container['exit_code']})"
    return str(status)


@click.command()
@click.option("-f", "--follow", "keep", is_flag=True, help="Keep printing until it exits.")
@click.option("--data-dir", type=click.Path(file_okay=False), default=None,
              help="The agent's data directory (default: the running `up`'s, else "
                   "~/.meshlet/agent).")
@click.argument("name")
@pass_ctx
def logs(ctx: Context, keep: bool, data_dir: str | None, name: str) -> None:
    """Print a container's output (on the host where it runs)."""
    body, _ = ctx.call(lambda c: c.container(name))
    log = log_path(name, data_dir)
    with open_log(log) as f:
        if f is None:
            raise ConfigError(f"no output of {name!r} on this host (it runs on node "
                              f"{body['node']!r}; looked for {log})", "name")
    if keep:
        follow(ctx, name, log)
    else:
        print_from(log, 0)


@click.command("exec")
@click.argument("name")
@click.argument("command", nargs=-1, required=True)
@pass_ctx
def exec_(ctx: Context, name: str, command: tuple[str, ...]) -> None:
    """Run COMMAND inside a running container's network namespace, with its env."""
    body, _ = ctx.call(lambda c: c.container(name))
    if body["status"] != "running":
        raise Conflict(f"container {name!r} is {body['status']}, not running", "name")
    argv = ["ip", "netns", "exec", body["namespace"], *command] if body["namespace"] \
        else list(command)
    try:
        os.execvpe(argv[0], argv, {**os.environ, **body["env"]})
    except OSError as exc:
        raise MeshletError(f"cannot run {argv[0]}: {exc.strerror}") from None


@click.command()
@click.argument("names", nargs=-1, required=True)
@pass_ctx
def stop(ctx: Context, names: tuple[str, ...]) -> None:
    """Stop running containers (SIGTERM, then SIGKILL)."""
    for name in names:
        async def halt(client: Client, name: str = name) -> dict[str, Any]:
            await client.container_desire(name, "stopped")
            return await client.wait_container(name, ("running", "created"),
                                               START_TIMEOUT)
        ctx.call(halt)
        click.echo(name)


@click.command()
@click.option("-f", "--force", is_flag=True, help="Stop it first if it runs.")
@click.argument("names", nargs=-1, required=True)
@pass_ctx
def rm(ctx: Context, force: bool, names: tuple[str, ...]) -> None:
    """Remove containers: their processes, namespaces, links and addresses."""
    for name in names:
        async def remove(client: Client, name: str = name) -> None:
            body, _ = await client.container(name)
            if body["status"] == "running" and not force:
                raise Conflict(f"container {name!r} is running: stop it first, or use -f",
                               "name")
            await client.container_delete(name)
        ctx.call(remove)
        click.echo(name)


COMMANDS = [run, ps, logs, exec_, stop, rm]

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
import re
import secrets
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
from meshlet.errors import ConfigError, Conflict, MeshletError, NotFound
from meshlet.quantities import parse_cpus, parse_memory
from meshlet.restart_policy import parse_restart

START_TIMEOUT = 30.0


RAW = "\0--"  # marks a command given after `--` (no image)


class RunCommand(click.Command):
    """`run`'s arguments as Docker reads them: options stop at the image, whose own
    arguments follow; a command after ``--`` instead of an image runs on the host's
    filesystem, as before images."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        takes_value = {o for p in self.params if isinstance(p, click.Option)
                       and not p.is_flag for o in p.opts + p.secondary_opts}
        i = 0
        while i < len(args):
            word = args[i]
            if word == "--":
                args = [*args[:i + 1], RAW, *args[i + 1:]]
                break
            if not word.startswith("-") or word == "-":
                break
            i += 2 if word in takes_value else 1
        return super().parse_args(ctx, args)


def split_image(words: tuple[str, ...]) -> tuple[str, list[str]]:
    """(image, its arguments), or ("", command) for a command given after ``--``."""
    if words and words[0] == RAW:
        return "", list(words[1:])
    if not words:
        raise ConfigError("give an image (meshlet run [OPTIONS] IMAGE [CMD...]) or a "
                          "command after --", "image")
    return words[0], [w for w in words[1:] if w != RAW]


def parse_env(pairs: tuple[str, ...]) -> dict[str, str]:
    env = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep:
            value = os.environ.get(key, "")  # `-e NAME` passes this shell's, as Docker
        env[key] = value
    return env


def resolve_image(image: str, node: str | None, data_dir: str | None
                  ) -> tuple[str, tuple[str, ...]]:
    """The image's id in this host's store and its ExposedPorts, when the container
    runs here ("" and none if the store cannot be read here: the agent resolves the
    name itself)."""
    if node not in (None, os.uname().nodename):
        return "", ()
    from meshlet.image.store import ImageStore
    store = ImageStore(Path(data_dir) / "images" if data_dir else devmode.images_dir())
    try:
        found = store.resolve(image)
    except NotFound:
        raise NotFound(f"no image {image!r} on this host: import it first (meshlet image "
                       f"import FILE --name {image})", "image") from None
    except OSError:
        return "", ()
    return found.id, tuple(found.config.exposed_ports)


def publish_all(exposed: tuple[str, ...]) -> list[str]:
    """`-P`: each exposed TCP port on a free port of the host, as Docker picks one."""
    import socket
    published = []
    for port in exposed:
        number, _, proto = port.partition("/")
        if proto in ("", "tcp"):
            with socket.socket() as s:
                s.bind(("0.0.0.0", 0))
                published.append(f"{s.getsockname()[1]}:{number}")
    return published


@click.command(cls=RunCommand, context_settings={"allow_interspersed_args": False})
@click.option("-d", "--detach", is_flag=True, help="Return once it runs; do not follow it.")
@click.option("--name", default=None, help="The container's name (default: made up).")
@click.option("--network", "networks", multiple=True, metavar="NET",
              help="A network to join (repeat for more; default: the host's network).")
@click.option("-p", "--publish", "ports", multiple=True, metavar="[IP:]HOSTPORT:PORT",
              help="Forward a host port to the container.")
@click.option("-P", "--publish-all", "publish_all_ports", is_flag=True,
              help="Forward a free host port to each port the image exposes.")
@click.option("-e", "--env", "env_pairs", multiple=True, metavar="K=V")
@click.option("--restart", default="no", metavar="POLICY",
              help="no, on-failure[:N], always or unless-stopped.")
@click.option("-m", "--memory", default=None, metavar="SIZE",
              help="Memory limit (64m, 1g); the kernel kills a process over it.")
@click.option("--cpus", default=None, metavar="N", help="CPU limit (0.5, 2).")
@click.option("-u", "--user", default="", metavar="USER[:GROUP]",
              help="Run the image as this user (default: the image's).")
@click.option("-w", "--workdir", default="", metavar="DIR",
              help="Working directory in the image (default: the image's).")
@click.option("--entrypoint", default=None, metavar="CMD",
              help="Replace the image's entrypoint.")
@click.option("--stop-timeout", default=10, type=click.IntRange(0, 3600), metavar="SECONDS",
              help="Grace between SIGTERM and SIGKILL when stopped (default 10).")
@click.option("--node", default=None, help="The agent's node (default: this host).")
@click.option("--data-dir", type=click.Path(file_okay=False), default=None,
              help="This host's agent data directory, where images are (default: the "
                   "running `up`'s, else ~/.meshlet/agent).")
@click.argument("command", nargs=-1, metavar="(IMAGE [CMD]... | -- CMD...)")
@pass_ctx
def run(ctx: Context, detach: bool, name: str | None, networks: tuple[str, ...],
        ports: tuple[str, ...], publish_all_ports: bool, env_pairs: tuple[str, ...],
        restart: str,
        memory: str | None, cpus: str | None, user: str, workdir: str,
        entrypoint: str | None, stop_timeout: int, node: str | None,
        data_dir: str | None, command: tuple[str, ...]) -> None:
    """Run IMAGE (from `meshlet image import`) in a new container, or a COMMAND after
    `--` on the host's filesystem."""
    image, args = split_image(command)
    fields: dict[str, Any] = {
        "restart": str(parse_restart(restart)), "stop_timeout": stop_timeout,
        "memory": parse_memory(memory) if memory else 0,
        "cpus": parse_cpus(cpus) if cpus else 0.0}
    ports = tuple(ports)
    if image:
        image_id, exposed = resolve_image(image, node, data_dir)
        fields.update(image=image, image_id=image_id, user=user, workdir=workdir,
                      entrypoint=[entrypoint] if entrypoint else [])
        if publish_all_ports:
            ports += tuple(publish_all(exposed))
    elif user or workdir or entrypoint or publish_all_ports:
        raise ConfigError("--user, --workdir, --entrypoint and -P need an image", "image")
    name = name or made_up_name(image or args[0])
    env = parse_env(env_pairs)

    async def start(client: Client) -> dict[str, Any]:
        await client.container_create(name, args, node or os.uname().nodename,
                                      env, list(networks), list(ports), **fields)
        return await client.wait_container(name, ("created",), START_TIMEOUT)
    body = ctx.call(start)
    if body["status"] == "failed":
        raise MeshletError(f"container {name!r} failed to start: {body['detail']}")
    if detach:
        click.echo(name)
        return
    code = follow(ctx, name, log_path(name, data_dir))
    sys.exit(code or 0)


def made_up_name(source: str) -> str:
    """``<image or command base>-<6 hex>``, as Docker makes up a name."""
    base = re.sub(r"[^A-Za-z0-9_.-]", "-", source.rsplit("/", 1)[-1].split(":", maxsplit=1)[0])
    return f"{base.strip('-.') or 'container'}-{secrets.token_hex(3)}"[:63]


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
        if body["status"] not in ("running", "restarting", "created"):
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
    table([(r["name"], r.get("image") or "-", r["node"], describe(r),
            " ".join(f"{n}={a}" for n, a in r["addresses"].items())
            or ",".join(r["networks"]) or "host",
            " ".join(r["ports"]), " ".join(r["command"])[:40]) for r in rows],
          ["NAME", "IMAGE", "NODE", "STATUS", "NETWORKS", "PORTS", "COMMAND"])


def describe(container: dict[str, Any]) -> str:
    status = container["status"]
    if status == "running":
        return f"running (pid {container['pid']})"
    if status == "exited":
        return f"exited ({container['exit_code']})"
    if status == "restarting":
        return f"restarting ({container['exit_code']}, {container['restart_count']} so far)"
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


@click.command("exec", context_settings={"allow_interspersed_args": False})
@click.option("-t", "--tty", is_flag=True, help="Give the command a terminal (images).")
@click.option("-e", "--env", "env_pairs", multiple=True, metavar="K=V")
@click.option("-u", "--user", default="", metavar="USER[:GROUP]",
              help="As this uid[:gid] (images; default: the container's user).")
@click.option("-w", "--workdir", default="", metavar="DIR")
@click.argument("name")
@click.argument("command", nargs=-1, required=True)
@pass_ctx
def exec_(ctx: Context, tty: bool, env_pairs: tuple[str, ...], user: str, workdir: str,
          name: str, command: tuple[str, ...]) -> None:
    """Run COMMAND in a running container: in every namespace of an image's, in the
    network namespace of a command's."""
    if command[0] == "--":  # `exec NAME -- CMD`: options end at NAME, so `--` is left
        command = command[1:]
    if not command:
        raise ConfigError("give the command to run after the container's name", "command")
    body, _ = ctx.call(lambda c: c.container(name))
    if body["status"] != "running":
        raise Conflict(f"container {name!r} is {body['status']}, not running", "name")
    env = parse_env(env_pairs)
    if body.get("image"):
        from meshlet.agent.host_networks import namespace_prefix
        from meshlet.agent.image_runner import RUNC_STATE
        from meshlet.runtime.runc import Runc
        argv = Runc(RUNC_STATE).exec_argv(namespace_prefix(body["node"]) + name, command,
                                          [f"{k}={v}" for k, v in env.items()], tty,
                                          user, workdir)
        env = dict(os.environ)
    else:
        if user or workdir or tty:
            raise ConfigError("--user, --workdir and --tty need an image container",
                              "name")
        argv = ["ip", "netns", "exec", body["namespace"], *command] if body["namespace"] \
            else list(command)
        env = {**os.environ, **body["env"], **env}
    try:
        os.execvpe(argv[0], argv, env)
    except OSError as exc:
        raise MeshletError(f"cannot run {argv[0]}: {exc.strerror}") from None


@click.command()
@click.option("-t", "--time", "grace", default=None, type=click.IntRange(0, 3600),
              metavar="SECONDS", help="Grace before SIGKILL (default: the container's "
              "--stop-timeout, 10).")
@click.argument("names", nargs=-1, required=True)
@pass_ctx
def stop(ctx: Context, grace: int | None, names: tuple[str, ...]) -> None:
    """Stop running containers (SIGTERM, then SIGKILL after the grace period)."""
    for name in names:
        async def halt(client: Client, name: str = name) -> dict[str, Any]:
            await client.container_desire(name, "stopped",
                                          -1 if grace is None else grace)
            return await client.wait_container(name, ("running", "created", "restarting"),
                                               START_TIMEOUT + (grace or 10))
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

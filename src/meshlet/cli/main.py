"""Entry point: ``meshlet <command>``. Every error is one line on stderr and exit 1."""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import os
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import click

import meshlet
from meshlet import devmode
from meshlet.addresses import parse_hostport, parse_http_url, parse_ipv4, to_url
from meshlet.cli.context import Context, pass_ctx
from meshlet.cli.global_options import GlobalOptionsGroup
from meshlet.cli.render import clean, echo, emit_json, table
from meshlet.errors import ConfigError, MeshletError, NotFound

# The commands whose modules are imported only when they run (or --help lists them):
# the kube objects' models, rich's console and the capacity model cost more to import
# than a typical command takes to run.
LAZY_COMMANDS = {
    "acl": "meshlet.cli.acl:acl",
    "apply": "meshlet.cli.kube:apply",
    "ca": "meshlet.cli.ca:ca",
    "capacity": "meshlet.cli.capacity:capacity",
    "delete": "meshlet.cli.kube:delete",
    "describe": "meshlet.cli.kube:describe",
    "exec": "meshlet.cli.containers:exec_",
    "get": "meshlet.cli.kube:get",
    "image": "meshlet.cli.image:image",
    "intention": "meshlet.cli.intention:intention",
    "logs": "meshlet.cli.containers:logs",
    "network": "meshlet.cli.network:network",
    "prometheus-sd": "meshlet.cli.prometheus_sd:prometheus_sd",
    "ps": "meshlet.cli.containers:ps",
    "rm": "meshlet.cli.containers:rm",
    "rollout": "meshlet.cli.rollout:rollout",
    "run": "meshlet.cli.containers:run",
    "scale": "meshlet.cli.kube:scale",
    "stop": "meshlet.cli.containers:stop",
    "top": "meshlet.cli.top:top",
    "ui": "meshlet.cli.ui:ui",
}


def default_addr() -> str:
    state = devmode.read_state() if "MESHLET_ADDR" not in os.environ else None
    if state is not None:
        return str(state["api"])
    return os.environ.get("MESHLET_ADDR", f"http://{devmode.DEFAULT_HTTP}")




@click.group(cls=GlobalOptionsGroup, lazy_commands=LAZY_COMMANDS,
             context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--addr", default=None, metavar="URL",
              help="API address (env MESHLET_ADDR; default: the running `up`, else "
                   f"http://{devmode.DEFAULT_HTTP}).")
@click.option("--token", default=None, metavar="T",
              help="ACL token (env MESHLET_TOKEN; default: on the machine where `meshlet "
                   "up` runs, its management token, if this user may read it).")
@click.option("-o", "--output", type=click.Choice(["table", "json"]), default="table",
              help="Output format (also accepted after the command).")
@click.option("-v", "--verbose", is_flag=True, help="Log what happens to stderr.")
@click.option("--ca-file", default=None, metavar="FILE", type=click.Path(dir_okay=False),
              help="The cluster's CA certificate, to check a server's HTTPS (env "
                   "MESHLET_CA_FILE; a server writes it as ca.pem in its data directory).")
@click.version_option(meshlet.__version__, prog_name="meshlet")
@click.pass_context
def cli(ctx: click.Context, addr: str | None, token: str | None, output: str,
        verbose: bool, ca_file: str | None) -> None:
    """meshlet: a light service mesh for Linux."""
    if ca_file:  # every client this process makes (CLI, agent) checks against it
        os.environ["MESHLET_CA_FILE"] = os.path.abspath(ca_file)
    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    addr = addr or default_addr()
    token = token or os.environ.get("MESHLET_TOKEN") or devmode.local_token(addr)
    ctx.obj = Context(addr, output, token)


# -- processes ------------------------------------------------------------------------


@cli.command()
@click.argument("file", required=False, type=click.Path(dir_okay=False))
@click.option("--detach", "-d", is_flag=True, help="Run in the background; stop with `down`.")
@click.option("--http", "http_addr", default=devmode.DEFAULT_HTTP, show_default=True,
              help="Where the embedded server's API listens.")
@click.option("--data-dir", type=click.Path(file_okay=False), default=None,
              help="Keep server and agent data here (default: a temporary directory).")
@click.option("--default-intention", type=click.Choice(["allow", "deny"]), default="allow",
              show_default=True,
              help="Whether a caller no intention names may call a service; recorded "
                   "when the cluster is founded.")
@click.option("--agent-metrics-addr", default=devmode.DEFAULT_AGENT_METRICS,
              show_default=True, metavar="HOST:PORT",
              help="Where the embedded agent serves read-only Prometheus metrics (port "
                   "0: any free port; registered with its node for `meshlet "
                   "prometheus-sd`).")
@pass_ctx
def up(ctx: Context, file: str | None, detach: bool, http_addr: str,
       data_dir: str | None, default_intention: str, agent_metrics_addr: str) -> None:
    """Start an embedded server and agent, and FILE's services with their sidecars."""
    manifest, cwd = devmode.load(file)  # validate before detaching
    host, port = parse_hostport(http_addr, "--http")
    agent_metrics = parse_hostport(agent_metrics_addr, "--agent-metrics-addr")
    if detach:
        argv = ["up", *([file] if file else []), "--http", http_addr,
                "--default-intention", default_intention,
                "--agent-metrics-addr", agent_metrics_addr,
                *(["--data-dir", data_dir] if data_dir else [])]
        state = devmode.detach(argv)
        print_ready(ctx, state["api"], state["workloads"])
        click.echo("stop with: meshlet down", err=True)
        return

    def on_ready(api: str, workloads: list[dict[str, Any]], agent_dir: Path,
                 images_dir: Path) -> None:
        if os.environ.get("MESHLET_DETACHED"):
            devmode.write_state(api, workloads, agent_dir, images_dir)
        print_ready(ctx, api, workloads)
        click.echo("press Ctrl-C to stop", err=True)

    try:
        asyncio.run(devmode.run_up(manifest, cwd, host, port,
                                   Path(data_dir) if data_dir else None, on_ready,
                                   default_intention, agent_metrics))
    finally:
        devmode.clear_state()
    click.echo("meshlet: stopped", err=True)


def print_ready(ctx: Context, api: str, workloads: list[dict[str, Any]]) -> None:
    if ctx.json:
        emit_json({"api": api, "workloads": workloads})
        return
    echo(f"meshlet API: {api}")
    if workloads:
        table([(w["service"], w["instance"], w["address"], w["app_port"] or "-")
               for w in workloads],
              ["SERVICE", "INSTANCE", "LISTENING (sidecar)", "APP PORT"])
        if any(w.get("ingress") for w in workloads):
            echo("Inside the mesh every hop is mutual TLS: call a published service on "
                 "its ingress-gateway address.")


@cli.command()
def down() -> None:
    """Stop what `up --detach` started."""
    pid = devmode.down()
    if pid is None:
        raise NotFound("nothing to stop: no `meshlet up --detach` is running")
    click.echo(f"meshlet: stopped (pid {pid})")


@cli.command()
@click.option("--data-dir", required=True, type=click.Path(file_okay=False))
@click.option("--http", "http_addr", default=devmode.DEFAULT_HTTP, show_default=True)
@click.option("--id", "server_id", default="server-1", show_default=True,
              help="This server's id, unique in its cluster.")
@click.option("--snapshot-every", default=8192, show_default=True, type=click.IntRange(1),
              help="Snapshot the state and compact the log once this many entries "
                   "have piled up (at most once per --snapshot-interval, unless 16 "
                   "times as many have).")
@click.option("--snapshot-interval", default="30s", show_default=True, metavar="DURATION",
              help="Least time between two snapshots.")
@click.option("--raft", "raft_addr", default=None, metavar="HOST:PORT",
              help="Listen here for the other servers (needed to have any).")
@click.option("--peer", "peer_specs", multiple=True, metavar="ID=RAFT_ADDR,HTTP_ADDR",
              help="Found a new cluster with this server (repeat for each founder).")
@click.option("--join", "join_urls", multiple=True, metavar="URL",
              help="Join the cluster of the server at URL (repeat to try several).")
@click.option("--node-ttl", default="30s", show_default=True, metavar="DURATION",
              help="Deregister a node whose agent sends no heartbeat for this long.")
@click.option("--bootstrap-expect", type=click.IntRange(1), default=None,
              help="Found a new cluster once this many servers (found through --join) "
                   "are up.")
@click.option("--join-token", envvar="MESHLET_JOIN_TOKEN", default=None, metavar="T",
              show_envvar=True,
              help="The cluster's shared secret, the same on every server (needed with "
                   "--raft; make one with `meshlet keygen`).")
@click.option("--default-intention", type=click.Choice(["allow", "deny"]), default="allow",
              show_default=True,
              help="Whether a caller no intention names may call a service; recorded "
                   "when the cluster is founded.")
@click.option("--max-connections", type=click.IntRange(0, 1 << 20), default=0,
              help="Client connections to hold at most (default: half the descriptor "
                   "limit, at most 16384).")
def server(data_dir: str, http_addr: str, server_id: str, snapshot_every: int,
           snapshot_interval: str,
           raft_addr: str | None, peer_specs: tuple[str, ...], join_urls: tuple[str, ...],
           node_ttl: str, bootstrap_expect: int | None, join_token: str | None,
           default_intention: str, max_connections: int) -> None:
    """Run a control-plane server: alone, or one of a Raft cluster.

    The data directory wins over the flags: a server that already has a cluster
    restarts into it and ignores --peer, --join and --bootstrap-expect."""
    from meshlet.durations import parse_duration
    from meshlet.server.main import ServerOptions, serve_forever
    from meshlet.server.raft_node import parse_peer
    host, port = parse_hostport(http_addr, "--http")
    options = ServerOptions(
        server_id=server_id,
        raft=parse_hostport(raft_addr, "--raft") if raft_addr is not None else None,
        peers=dict(parse_peer(spec) for spec in peer_specs),
        join=[parse_http_url(u, "--join") for u in join_urls],
        bootstrap_expect=bootstrap_expect,
        snapshot_every=snapshot_every,
        snapshot_interval=parse_duration(snapshot_interval, "snapshot_interval"),
        node_ttl=parse_duration(node_ttl, "node_ttl"),
        join_token=join_token or None, default_intention=default_intention,
        max_connections=max_connections)
    options.check()
    from meshlet.loop import install_uvloop, raise_descriptor_limit
    install_uvloop()  # a faster event loop: much of a server's time is in it
    raise_descriptor_limit()  # each agent holds connections to it
    run_until_signal(lambda stop: serve_forever(Path(data_dir), host, port, stop, options))


@cli.command()
def keygen() -> None:
    """Print a new random join token for a cluster's servers (as `consul keygen`)."""
    from meshlet.private_files import new_secret
    click.echo(new_secret())


@cli.command()
@click.option("--server", "server_url", required=True, help="Server API URL.")
@click.option("--file", "file", type=click.Path(dir_okay=False), default=None,
              help="Services to run on this host.")
@click.option("--data-dir", type=click.Path(file_okay=False), default=None)
@click.option("--zone", default="")
@click.option("--node", default=None, help="Node name (default: host name).")
@click.option("--advertise", default=None, metavar="IP",
              help="The address other hosts reach this one on: the local end of overlay "
                   "tunnels (default: the address packets to the server leave from).")
@click.option("--token", "agent_token", envvar="MESHLET_TOKEN", default=None, metavar="T",
              show_envvar=True,
              help="The agent's ACL token (node, service, container and network write); "
                   "prefer the environment variable to the flag, which `ps` shows.")
@click.option("--metrics-addr", default=None, metavar="HOST:PORT",
              help="Serve read-only Prometheus metrics (GET /metrics) here, and register "
                   "the address with the node for `meshlet prometheus-sd` (port 0: any "
                   "free port).")
def agent(server_url: str, file: str | None, data_dir: str | None, zone: str,
          node: str | None, advertise: str | None, agent_token: str | None,
          metrics_addr: str | None) -> None:
    """Run an agent: workloads, health checks and sidecars for one host."""
    from meshlet.agent.agent import Agent
    if advertise is not None:
        parse_ipv4(advertise, "advertise")
    metrics = parse_hostport(metrics_addr, "--metrics-addr") if metrics_addr else None
    manifest, cwd = devmode.load(file)
    directory = Path(data_dir) if data_dir else devmode.meshlet_home() / "agent"

    async def run(stop: asyncio.Event) -> None:
        agent = Agent(to_url(server_url), directory, node or os.uname().nodename, zone,
                      advertise, token=agent_token)
        try:
            if metrics is not None:
                await agent.serve_metrics(*metrics)
            agent.run_containers()
            if manifest is not None:
                await agent.start(manifest, cwd)
                click.echo(f"meshlet agent: {len(agent.workloads)} workloads running")
            await stop.wait()
        finally:
            await agent.stop()
    run_until_signal(run)


@cli.command(add_help_option=False, context_settings={
    "ignore_unknown_options": True, "allow_extra_args": True, "help_option_names": []})
@click.argument("args", nargs=-1, type=click.UNPROCESSED)
def proxy(args: tuple[str, ...]) -> None:
    """Run a sidecar proxy (normally started by the agent).

    The sidecar's own entry point parses the options (`python -m meshlet proxy`, as the
    agent runs it, reaches it without loading this CLI), so both spellings are one."""
    from meshlet.proxy.main import main as proxy_main
    sys.exit(proxy_main(list(args)))


def run_until_signal(main: Callable[[asyncio.Event], Awaitable[None]]) -> None:
    import signal

    async def runner() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await main(stop)
    try:
        asyncio.run(runner())
    except OSError as exc:
        raise MeshletError(f"{exc.strerror or exc}") from None


# -- catalog ---------------------------------------------------------------------------


@cli.command()
@pass_ctx
def status(ctx: Context) -> None:
    """Server status."""
    body = ctx.call(lambda c: c.status())
    if ctx.json:
        emit_json(body)
        return
    table([(ctx.addr, body["version"], body["raft"]["role"], len(body["members"]),
            body["index"], body["services"], body["instances"], body["kv_keys"])],
          ["SERVER", "VERSION", "ROLE", "MEMBERS", "INDEX", "SERVICES", "INSTANCES",
           "KV KEYS"])


@cli.command()
@pass_ctx
def members(ctx: Context) -> None:
    """The servers of the cluster, as the server at --addr sees them."""
    rows = ctx.call(lambda c: c.status())["members"]
    if ctx.json:
        emit_json(rows)
        return
    table([(m["id"], m["raft"] or "-", m["http"], m["role"],
            "" if m["last_contact"] is None else f"{m['last_contact']:.3f}s",
            "" if m["match_index"] is None else m["match_index"]) for m in rows],
          ["ID", "RAFT", "HTTP", "ROLE", "LAST CONTACT", "MATCH INDEX"])


@cli.group()
def raft() -> None:
    """Raft state and membership of the cluster."""


@raft.command("status")
@pass_ctx
def raft_status(ctx: Context) -> None:
    """Term, role, leader, commit and applied index of the server at --addr."""
    body = ctx.call(lambda c: c.status())
    info = body["raft"]
    if ctx.json:
        emit_json(info)
        return
    table([(body["id"], info["role"], info["term"], info["leader"] or "-", info["commit"],
            info["applied"], info["last_index"], info["snapshot_index"])],
          ["ID", "ROLE", "TERM", "LEADER", "COMMIT", "APPLIED", "LAST INDEX", "SNAPSHOT"])


@raft.command("add-peer")
@click.argument("server_id", metavar="ID")
@click.option("--raft", "raft_addr", required=True, metavar="HOST:PORT",
              help="The new server's Raft address.")
@click.option("--http", "http_addr", required=True, metavar="HOST:PORT",
              help="The new server's API address.")
@pass_ctx
def raft_add_peer(ctx: Context, server_id: str, raft_addr: str, http_addr: str) -> None:
    """Add server ID to the cluster (it should be running, started without --peer)."""
    parse_hostport(raft_addr, "--raft")
    members = ctx.call(lambda c: c.add_peer(server_id, raft_addr, to_url(http_addr)))
    show_members(ctx, members, f"added {server_id}")


@raft.command("remove-peer")
@click.argument("server_id", metavar="ID")
@pass_ctx
def raft_remove_peer(ctx: Context, server_id: str) -> None:
    """Remove server ID from the cluster (then stop it, or wipe and re-add it)."""
    members = ctx.call(lambda c: c.remove_peer(server_id))
    show_members(ctx, members, f"removed {server_id}")


def show_members(ctx: Context, members: dict[str, Any], done: str) -> None:
    if ctx.json:
        emit_json(members)
        return
    echo(f"{done}; the cluster is now: {', '.join(sorted(members))}")


@raft.command("transfer-leader")
@click.argument("to", required=False)
@pass_ctx
def raft_transfer_leader(ctx: Context, to: str | None) -> None:
    """Hand leadership to server TO (default: the most caught-up follower)."""
    leader = ctx.call(lambda c: c.transfer_leader(to))
    if ctx.json:
        emit_json({"leader": leader})
    else:
        echo(f"leadership handed to {leader}")


@cli.command()
@pass_ctx
def services(ctx: Context) -> None:
    """List services with instance counts."""
    body = ctx.call(lambda c: c.services())
    if ctx.json:
        emit_json(body)
        return
    table([(s["name"], s["instances"], s["passing"], ",".join(s["tags"])) for s in body],
          ["SERVICE", "INSTANCES", "PASSING", "TAGS"])


@cli.command()
@pass_ctx
def nodes(ctx: Context) -> None:
    """List the hosts running an agent and the address each is reached on."""
    body, _ = ctx.call(lambda c: c.nodes())
    if ctx.json:
        emit_json(body)
        return
    table([(n["name"], n["address"]) for n in body], ["NODE", "ADDRESS"])


@cli.command()
@click.option("--cidr", default=None, metavar="CIDR",
              help="Take services' virtual IPs from CIDR (every service is renumbered).")
@pass_ctx
def vips(ctx: Context, cidr: str | None) -> None:
    """List each service's virtual IP and ports; set the service CIDR."""
    if cidr is not None:
        ctx.call(lambda c: c.service_cidr_set(cidr))
    body, _ = ctx.call(lambda c: c.vips())
    if ctx.json:
        emit_json(body)
        return
    echo(f"service CIDR {body['cidr']}")
    table([(v["service"], v["vip"], ",".join(map(str, v["ports"]))) for v in body["vips"]],
          ["SERVICE", "VIP", "PORTS"])


@cli.command()
@click.argument("service")
@click.option("--passing", is_flag=True, help="Only instances whose health is passing.")
@pass_ctx
def instances(ctx: Context, service: str, passing: bool) -> None:
    """List a service's instances with health and restarts."""
    body, _ = ctx.call(lambda c: c.instances(service, passing=passing))
    if ctx.json:
        emit_json(body)
        return
    table([(i["id"], f"{i['address']}:{i['port']}", i["status"], i["restarts"], i["pid"],
            i["weight"], i["output"][:60]) for i in body],
          ["INSTANCE", "ADDRESS", "STATUS", "RESTARTS", "PID", "WEIGHT", "OUTPUT"])


# -- kv --------------------------------------------------------------------------------


@cli.group()
def kv() -> None:
    """Key/value store."""


CONSISTENCY = click.option(
    "--consistency", type=click.Choice(["stale", "default", "consistent"]), default="default",
    show_default=True, help="stale: any server's local state; default: the leader's; "
    "consistent: the leader's after confirming it still leads.")


@kv.command("get")
@click.argument("key")
@CONSISTENCY
@pass_ctx
def kv_get(ctx: Context, key: str, consistency: str) -> None:
    """Print a key's raw value (as `consul kv get` does); -o json for the metadata."""
    if ctx.json:
        emit_json(ctx.call(lambda c: c.kv_get(key, consistency)))
        return
    value = ctx.call(lambda c: c.kv_get_raw(key, consistency))
    sys.stdout.buffer.write(value + (b"" if value.endswith(b"\n") else b"\n"))


@kv.command("put")
@click.argument("key")
@click.argument("value", required=False)
@click.option("--cas", type=int, default=None, help="Only if the modify index is this "
              "(0: only if the key does not exist).")
@pass_ctx
def kv_put(ctx: Context, key: str, value: str | None, cas: int | None) -> None:
    """Set KEY to VALUE (or to standard input when VALUE is '-' or absent)."""
    data = sys.stdin.buffer.read() if value in (None, "-") else value.encode()
    body = ctx.call(lambda c: c.kv_put(key, data, cas))
    if ctx.json:
        emit_json(body)
    else:
        echo(f"Success! Data written to: {key} (index {body['modify_index']})")


@kv.command("delete")
@click.argument("key")
@click.option("--cas", type=int, default=None)
@pass_ctx
def kv_delete(ctx: Context, key: str, cas: int | None) -> None:
    """Delete KEY."""
    deleted = ctx.call(lambda c: c.kv_delete(key, cas))
    if ctx.json:
        emit_json({"deleted": deleted})
    else:
        echo(f"Success! Deleted key: {key}" if deleted else f"No such key: {key}")


@kv.command("list")
@click.argument("prefix", required=False, default="")
@CONSISTENCY
@pass_ctx
def kv_list(ctx: Context, prefix: str, consistency: str) -> None:
    """List keys under PREFIX."""
    body = ctx.call(lambda c: c.kv_list(prefix, consistency))
    if ctx.json:
        emit_json(body)
        return
    table([(e["key"], e["modify_index"], len(base64.b64decode(e["value"]))) for e in body],
          ["KEY", "MODIFY INDEX", "BYTES"])


# -- config ----------------------------------------------------------------------------


@cli.group()
def config() -> None:
    """Per-service settings (LB policy, timeouts, retries)."""


@config.command("get")
@click.argument("service")
@pass_ctx
def config_get(ctx: Context, service: str) -> None:
    """Show SERVICE's settings: what is set, and what is in effect."""
    body, _ = ctx.call(lambda c: c.config_get(service))
    if ctx.json:
        emit_json(body)
        return
    table([(k, v, "set" if k in body["settings"] else "default")
           for k, v in sorted(body["effective"].items())], ["KEY", "VALUE", "SOURCE"])


@config.command("set")
@click.argument("service")
@click.argument("pairs", nargs=-1, metavar="KEY=VALUE...")
@click.option("-f", "--file", type=click.Path(dir_okay=False), default=None,
              help="Settings from a YAML or JSON mapping (routes, partition, ...).")
@click.option("--replace", is_flag=True, help="Replace the whole entry instead of merging.")
@pass_ctx
def config_set(ctx: Context, service: str, pairs: tuple[str, ...], file: str | None,
               replace: bool) -> None:
    """Set settings, e.g. `config set catalog lb=peak_ewma request_timeout=2s`.

    An empty value (KEY=) removes the key and restores its default. A value that starts
    with '[' or '{' is read as JSON (routes, partition)."""
    settings: dict[str, Any] = load_settings_file(file) if file else {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise ConfigError(f"{pair!r}: expected KEY=VALUE", key or pair)
        settings[key] = parse_setting_value(key, value)
    if not settings:
        raise ConfigError("nothing to set: give KEY=VALUE pairs or --file", "settings")
    body = ctx.call(lambda c: c.config_set(service, settings, replace))
    if ctx.json:
        emit_json(body)
    else:
        echo(f"Success! {service}: " + ", ".join(
            f"{k}={v}" for k, v in sorted(body["settings"].items())))


def parse_setting_value(key: str, value: str) -> Any:
    if value == "":
        return None
    if value[:1] in "[{":
        try:
            return json.loads(value)
        except ValueError as exc:
            raise ConfigError(f"{key}: not valid JSON: {exc}", key) from None
    return value


def load_settings_file(path: str) -> dict[str, Any]:
    import yaml
    try:
        data = yaml.safe_load(Path(path).read_text())
    except OSError as exc:
        raise ConfigError(f"cannot read {path}: {exc.strerror}", "file") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}", "file") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping of settings", "file")
    return data


def main() -> None:
    try:
        cli.main(standalone_mode=False)
    except click.exceptions.Abort:
        click.echo("meshlet: aborted", err=True)
        sys.exit(130)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except click.exceptions.Exit as exc:
        sys.exit(exc.exit_code)
    except MeshletError as exc:
        click.echo(f"meshlet: error: {clean(exc.message)}", err=True)
        sys.exit(1)
    except KeyboardInterrupt:
        sys.exit(130)
    except (PermissionError, FileNotFoundError, FileExistsError, IsADirectoryError,
            NotADirectoryError) as exc:  # the machine said no: the user can fix it
        if os.environ.get("MESHLET_DEBUG"):
            raise
        click.echo(f"meshlet: error: {exc.strerror}: {exc.filename}", err=True)
        sys.exit(1)
    except Exception as exc:  # a bug: say so in one line; details only when asked
        if os.environ.get("MESHLET_DEBUG"):
            raise
        click.echo(f"meshlet: internal error: {type(exc).__name__}: {clean(exc)} "
                   "(set MESHLET_DEBUG=1 for details)", err=True)
        sys.exit(70)


if __name__ == "__main__":
    main()

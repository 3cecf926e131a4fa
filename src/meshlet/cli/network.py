"""`meshlet network`: create, list, inspect and remove networks, as `docker network`
does."""

from __future__ import annotations

import click

from meshlet.cli.context import Context, pass_ctx
from meshlet.cli.render import echo, emit_json, table


@click.group()
def network() -> None:
    """Networks that workloads join (bridge, overlay, host, none)."""


@network.command("create")
@click.argument("name")
@click.option("-d", "--driver", default="bridge", show_default=True,
              type=click.Choice(["bridge", "overlay", "host", "none"]))
@click.option("--subnet", default=None, metavar="CIDR",
              help="Addresses for workloads (default: a free private /16).")
@click.option("--gateway", default=None, metavar="IP",
              help="The gateway's address (default: the subnet's first).")
@click.option("--internal", is_flag=True, help="No route out of the network.")
@pass_ctx
def network_create(ctx: Context, name: str, driver: str, subnet: str | None,
                   gateway: str | None, internal: bool) -> None:
    """Create network NAME."""
    body = ctx.call(lambda c: c.network_create(name, driver, subnet, gateway, internal))
    if ctx.json:
        emit_json(body)
    else:
        echo(body["name"])


@network.command("ls")
@pass_ctx
def network_ls(ctx: Context) -> None:
    """List networks."""
    rows = ctx.call(lambda c: c.networks())
    if ctx.json:
        emit_json(rows)
        return
    table([(n["name"], n["driver"], n["subnet"] or "-", n["gateway"] or "-",
            "yes" if n["internal"] else "no", len(n["addresses"])) for n in rows],
          ["NAME", "DRIVER", "SUBNET", "GATEWAY", "INTERNAL", "ATTACHED"])


@network.command("inspect")
@click.argument("name")
@pass_ctx
def network_inspect(ctx: Context, name: str) -> None:
    """Show network NAME: its pool and the workloads attached, with their addresses."""
    body = ctx.call(lambda c: c.network(name))
    if ctx.json:
        emit_json(body)
        return
    echo(f"name:     {body['name']}\ndriver:   {body['driver']}\n"
               f"subnet:   {body['subnet'] or '-'}\ngateway:  {body['gateway'] or '-'}\n"
               f"internal: {'yes' if body['internal'] else 'no'}")
    if body["addresses"]:
        click.echo("")
        table(sorted(body["addresses"].items()), ["WORKLOAD", "ADDRESS"])


@network.command("rm")
@click.argument("names", nargs=-1, required=True)
@pass_ctx
def network_rm(ctx: Context, names: tuple[str, ...]) -> None:
    """Remove networks (refused while workloads are attached)."""
    for name in names:
        remove(ctx, name)
        click.echo(name)


def remove(ctx: Context, name: str) -> None:
    ctx.call(lambda c: c.network_delete(name))


@network.command("connect")
@click.argument("name")
@click.argument("container")
@pass_ctx
def network_connect(ctx: Context, name: str, container: str) -> None:
    """Join CONTAINER to network NAME (a new interface, a new address)."""
    body = ctx.call(lambda c: c.container_connect(container, name))
    echo(f"{container} {name}={body['addresses'][name]}")


@network.command("disconnect")
@click.argument("name")
@click.argument("container")
@pass_ctx
def network_disconnect(ctx: Context, name: str, container: str) -> None:
    """Take CONTAINER off network NAME."""
    ctx.call(lambda c: c.container_connect(container, name, connect=False))
    click.echo(f"{container} left {name}")

"""`meshlet intention`: who may call whom, as `consul intention` does."""

from __future__ import annotations

import sys
from typing import Any

import click

from meshlet.cli.context import Context, pass_ctx
from meshlet.cli.render import echo, emit_json, table
from meshlet.errors import ConfigError
from meshlet.json_limits import loads

MAX_FILE = 1024 * 1024


@click.group()
def intention() -> None:
    """Intentions: allow or deny a source service calling a destination ('*': any)."""


def read_permissions(path: str) -> Any:
    try:
        with open(path, "rb") as f:
            data = f.read(MAX_FILE + 1)
    except OSError as exc:
        raise ConfigError(f"--permissions-file: cannot read {path}: {exc.strerror}",
                          "permissions") from None
    return loads(data, f"--permissions-file {path}", MAX_FILE)


@intention.command("create")
@click.argument("source")
@click.argument("destination")
@click.option("--action", type=click.Choice(["allow", "deny"]), default=None,
              help="Allow or deny every connection and request (L4).")
@click.option("--permissions-file", default=None, metavar="FILE",
              help="A JSON list of HTTP permissions, first match deciding (L7): "
                   '[{"action": "allow", "http": {"path_prefix": "/v1/", "methods": '
                   '["GET"]}}].')
@click.option("--description", default="", help="What the intention is for.")
@pass_ctx
def create(ctx: Context, source: str, destination: str, action: str | None,
           permissions_file: str | None, description: str) -> None:
    """Create (or replace) the intention from SOURCE to DESTINATION."""
    body: dict[str, Any] = {"source": source, "destination": destination,
                            "description": description}
    if permissions_file is not None:
        body["permissions"] = read_permissions(permissions_file)
    if action is not None:
        body["action"] = action
    made = ctx.call(lambda c: c.intention_set(body))
    if ctx.json:
        emit_json(made)
        return
    echo(f"{made['source']} => {made['destination']}: {describe(made)}")


def describe(i: dict[str, Any]) -> str:
    if i.get("permissions"):
        return f"L7 ({len(i['permissions'])} permissions)"
    return str(i.get("action", "-"))


@intention.command("list")
@pass_ctx
def list_(ctx: Context) -> None:
    """List intentions, highest precedence first, and the default policy."""
    body, _ = ctx.call(lambda c: c.intentions())
    if ctx.json:
        emit_json(body)
        return
    echo(f"default policy: {body['default_policy']}")
    table([(i["source"], i["destination"], describe(i), i["precedence"],
            i["description"] or "-") for i in body["intentions"]],
          ["SOURCE", "DESTINATION", "ACTION", "PRECEDENCE", "DESCRIPTION"])


@intention.command("delete")
@click.argument("source")
@click.argument("destination")
@pass_ctx
def delete(ctx: Context, source: str, destination: str) -> None:
    """Delete the intention from SOURCE to DESTINATION."""
    ctx.call(lambda c: c.intention_delete(source, destination))
    echo(f"deleted intention {source} => {destination}")


@intention.command("check")
@click.argument("source")
@click.argument("destination")
@click.option("--method", default="", help="An HTTP method, for L7 intentions.")
@click.option("--path", default="", help="A request path, for L7 intentions.")
@pass_ctx
def check(ctx: Context, source: str, destination: str, method: str, path: str) -> None:
    """Whether SOURCE may call DESTINATION: prints allowed or denied and why; exits 0
    when allowed, 2 when denied."""
    body = ctx.call(lambda c: c.intention_check(source, destination, method, path))
    if ctx.json:
        emit_json(body)
    else:
        echo(f"{'allowed' if body['allowed'] else 'denied'} ({body['why']})")
    if not body["allowed"]:
        sys.exit(2)

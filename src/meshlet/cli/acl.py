"""`meshlet acl`: tokens and policies, as `consul acl` does."""

from __future__ import annotations

import click

from meshlet.cli.context import Context, pass_ctx
from meshlet.cli.render import emit_json, table
from meshlet.errors import ConfigError


@click.group()
def acl() -> None:
    """Access control: tokens and the policies they grant."""


@acl.group()
def token() -> None:
    """ACL tokens (each names policies, or is a management token)."""


@acl.group()
def policy() -> None:
    """ACL policies: rules of read, write or deny on a kind and name prefix."""


@token.command("create")
@click.option("--policy", "policies", multiple=True, metavar="NAME",
              help="A policy the token grants (repeat for several).")
@click.option("--description", default="", help="What the token is for.")
@click.option("--management", is_flag=True, help="May do everything.")
@click.option("--node-identity", "nodes", multiple=True, metavar="NODE",
              help="Act for NODE: register it, read and report the containers placed "
                   "on it (an agent's token; repeat for several).")
@pass_ctx
def token_create(ctx: Context, policies: tuple[str, ...], description: str,
                 management: bool, nodes: tuple[str, ...]) -> None:
    """Create a token; its secret is shown this once."""
    body = ctx.call(lambda c: c.token_create(list(policies), description, management,
                                             list(nodes)))
    if ctx.json:
        emit_json(body)
        return
    click.echo(f"accessor: {body['accessor']}\nsecret:   {body['secret']}\n"
               f"policies: {', '.join(body['policies']) or '-'}"
               + (f"\nnodes:    {', '.join(body['node_identities'])}"
                  if body["node_identities"] else "")
               + ("\nmanagement: yes" if body["management"] else ""))


@token.command("list")
@pass_ctx
def token_list(ctx: Context) -> None:
    """List tokens (accessors only: secrets are never shown again)."""
    rows = ctx.call(lambda c: c.tokens())
    if ctx.json:
        emit_json(rows)
        return
    table([(t["accessor"], "yes" if t["management"] else "no",
            ",".join(t["policies"]) or "-", ",".join(t["node_identities"]) or "-",
            t["description"]) for t in rows],
          ["ACCESSOR", "MANAGEMENT", "POLICIES", "NODES", "DESCRIPTION"])


@token.command("delete")
@click.argument("accessor")
@pass_ctx
def token_delete(ctx: Context, accessor: str) -> None:
    """Delete the token with ACCESSOR."""
    ctx.call(lambda c: c.token_delete(accessor))
    click.echo(f"deleted token {accessor}")


def parse_rule(text: str) -> dict[str, str]:
    """``KIND:PREFIX:ACCESS`` (the prefix may hold ':' and may be empty)."""
    kind, sep, rest = text.partition(":")
    prefix, sep2, access = rest.rpartition(":")
    if not sep or not sep2:
        raise ConfigError(f"--rule {text!r}: expected KIND:PREFIX:ACCESS, e.g. "
                          "kv:app/:write", "rule")
    return {"kind": kind, "prefix": prefix, "access": access}


@policy.command("create")
@click.argument("name")
@click.option("--rule", "rules", multiple=True, metavar="KIND:PREFIX:ACCESS",
              help="e.g. kv:app/:write, service::read (repeat for several); kinds: kv, "
                   "service, config, network, container, node, acl, operator; access: "
                   "read, write, deny.")
@click.option("--description", default="")
@pass_ctx
def policy_create(ctx: Context, name: str, rules: tuple[str, ...], description: str) -> None:
    """Create policy NAME, or replace its rules."""
    parsed = [parse_rule(r) for r in rules]
    body = ctx.call(lambda c: c.policy_create(name, parsed, description))
    if ctx.json:
        emit_json(body)
    else:
        click.echo(f"policy {body['name']}: {len(body['rules'])} rules")


@policy.command("list")
@pass_ctx
def policy_list(ctx: Context) -> None:
    """List policies and their rules."""
    rows = ctx.call(lambda c: c.policies())
    if ctx.json:
        emit_json(rows)
        return
    table([(p["name"], " ".join(f"{r['kind']}:{r['prefix']}:{r['access']}"
                                for r in p["rules"]) or "-", p["description"])
           for p in rows], ["NAME", "RULES", "DESCRIPTION"])


@policy.command("delete")
@click.argument("name")
@pass_ctx
def policy_delete(ctx: Context, name: str) -> None:
    """Delete policy NAME (no token may still name it)."""
    ctx.call(lambda c: c.policy_delete(name))
    click.echo(f"deleted policy {name}")

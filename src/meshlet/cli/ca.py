"""`meshlet ca`: the cluster CA's roots and their rotation."""

from __future__ import annotations

import click

from meshlet.cli.context import Context, pass_ctx
from meshlet.cli.render import echo, emit_json, table


@click.group()
def ca() -> None:
    """The cluster's certificate authority: its trusted roots, rotation."""


@ca.command("roots")
@click.option("--pem", is_flag=True, help="Print the trust bundle (every trusted root) "
                                         "as PEM, for a workload's or client's roots file.")
@pass_ctx
def roots(ctx: Context, pem: bool) -> None:
    """List the trusted roots; the active one issues certificates."""
    body, _ = ctx.call(lambda c: c.ca_roots())
    if pem:
        echo(body["bundle"].rstrip("\n"))
        return
    if ctx.json:
        emit_json(body)
        return
    echo(f"trust domain: {body['trust_domain'] or '-'}")
    table([(r["generation"], "yes" if r["active"] else "no", r["rotated_at"] or "-",
            r["not_after"], "sha256:" + r["fingerprint"][:32])
           for r in body["roots"]],
          ["GENERATION", "ACTIVE", "ACTIVE SINCE", "NOT AFTER", "FINGERPRINT"])


@ca.command("rotate")
@pass_ctx
def rotate(ctx: Context) -> None:
    """Make the next root generation the active one. Certificates issued by the old
    root stay trusted: agents and servers get new ones at once, and the old root is
    pruned from the trust bundle once every certificate it issued has expired."""
    body = ctx.call(lambda c: c.ca_rotate())
    if ctx.json:
        emit_json(body)
        return
    trusted = ", ".join(str(r["generation"]) for r in body["roots"])
    echo(f"root generation {body['active_generation']} is active; trusted: {trusted}")

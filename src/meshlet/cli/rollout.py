"""`meshlet rollout status|history|undo deployment/NAME`, as kubectl's.

`status` waits on the Deployment with blocking queries (no polling) and prints a line
each time the rollout's progress changes (``deploy.rollout_status`` decides); `undo`
applies the current manifest with an earlier revision's pod template."""

from __future__ import annotations

import time
from typing import Any

import click

from meshlet.api.client import Client
from meshlet.cli.context import Context, pass_ctx
from meshlet.cli.kube_views import RESOURCES, ref, split_ref
from meshlet.cli.render import echo, emit_json, table
from meshlet.deploy import rollout_status
from meshlet.durations import parse_duration
from meshlet.errors import MeshletError, Unavailable

NAMESPACE = click.option("-n", "--namespace", default="default", show_default=True)
DEPLOYMENT = click.argument("words", nargs=-1, required=True,
                            metavar="deployment/NAME | deployment NAME")


def deployment_name(words: tuple[str, ...]) -> str:
    kind, name = split_ref(words)
    if kind != "Deployment":
        raise MeshletError(f"rollout works on a deployment, not {RESOURCES[kind][0]}")
    return name


@click.group()
def rollout() -> None:
    """A Deployment's rollouts: wait for one, list revisions, roll back."""


@rollout.command("status")
@DEPLOYMENT
@NAMESPACE
@click.option("--timeout", default="5m", show_default=True, metavar="DURATION",
              help="Give up after this long.")
@pass_ctx
def status(ctx: Context, words: tuple[str, ...], namespace: str, timeout: str) -> None:
    """Wait until the rollout is done; fail with why if it failed."""
    name = deployment_name(words)
    limit = parse_duration(timeout, "timeout")

    async def run(client: Client) -> None:
        deadline = time.monotonic() + limit
        record, index = await client.object("Deployment", namespace, name)
        shown = ""
        while True:
            now = rollout_status.progress(record)
            if now.line != shown:
                echo(now.line)
                shown = now.line
            if now.done:
                return
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise Unavailable(f"timed out waiting for deployment {name!r} to roll out "
                                  f"(after {timeout})")
            record, index = await client.object("Deployment", namespace, name, index,
                                                wait=min(remaining, 30.0))
    ctx.call(run)


@rollout.command("history")
@DEPLOYMENT
@NAMESPACE
@pass_ctx
def history(ctx: Context, words: tuple[str, ...], namespace: str) -> None:
    """The revisions kept (spec.revisionHistoryLimit) and their change causes."""
    name = deployment_name(words)
    record, _ = ctx.call(lambda c: c.object("Deployment", namespace, name))
    revisions: list[dict[str, Any]] = record["revisions"]
    if ctx.json:
        emit_json(revisions)
        return
    echo(ref("Deployment", name))
    table([(r["revision"], r["change_cause"] or "<none>") for r in revisions],
          ["REVISION", "CHANGE-CAUSE"])


@rollout.command("undo")
@DEPLOYMENT
@NAMESPACE
@click.option("--to-revision", type=click.IntRange(0), default=0,
              help="The revision to go back to (default: the one before the newest).")
@pass_ctx
def undo(ctx: Context, words: tuple[str, ...], namespace: str, to_revision: int) -> None:
    """Roll back to an earlier pod template (it becomes the newest revision)."""
    name = deployment_name(words)

    async def run(client: Client) -> dict[str, Any]:
        record, _ = await client.object("Deployment", namespace, name)
        manifest, _revision = rollout_status.undo(record, to_revision)
        return await client.object_apply(manifest)
    body = ctx.call(run)
    if ctx.json:
        emit_json(body)
    else:
        echo(f"{ref('Deployment', name)} rolled back")

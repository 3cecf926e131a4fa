"""`meshlet apply | get | describe | delete | scale | rollout`: Kubernetes manifests
and the objects they made, as kubectl reads and shows them.

`apply` reads every document first (``deploy.kube.load``) and applies nothing when
any is bad, or names a namespace that neither exists nor is applied with it; the
error is kube.py's own, ``FILE:LINE: field.path: message (in Kind name)``.
"""

from __future__ import annotations

import time
from typing import Any

import click
import yaml

from meshlet.api.client import Client
from meshlet.cli.context import Context, pass_ctx
from meshlet.cli.kube_describe import describe_object, describe_pod
from meshlet.cli.kube_views import (
    RESOURCES,
    columns,
    kind_of,
    list_document,
    object_document,
    pod_document,
    ref,
    split_ref,
)
from meshlet.cli.render import echo, emit_json, table
from meshlet.deploy.kube import load
from meshlet.errors import MeshletError, NotFound
from meshlet.kube_objects import KubeObject, Namespace

OUTPUT = click.option("-o", "--output", "fmt", default=None,
                      type=click.Choice(["table", "wide", "json", "yaml"]),
                      help="Output format (default: the global -o, a table).")
NAMESPACE = click.option("-n", "--namespace", default="default", show_default=True,
                         help="The namespace.")
FILES = click.option("-f", "--filename", "files", multiple=True, metavar="FILE|DIR|-",
                     help="Manifests: a file, the .yaml/.yml/.json files of a directory, "
                          "or - for standard input (repeatable).")


def namespace_of(obj: KubeObject) -> str:
    return "" if isinstance(obj, Namespace) else obj.namespace or "default"


def read_manifests(files: tuple[str, ...]) -> list[KubeObject]:
    if not files:
        raise click.UsageError("give the manifests with -f FILE|DIR|-")
    objects: list[KubeObject] = []
    for target in files:
        objects.extend(load(target))
    return objects


async def check_namespaces(client: Client, objects: list[KubeObject]) -> None:
    """Refuse, before anything is applied, objects whose namespace will not exist."""
    wanted = {namespace_of(o) for o in objects} - {"", "default"}
    made = {o.name for o in objects if isinstance(o, Namespace)}
    if wanted - made:
        existing = {r["name"] for r in (await client.objects(kind="Namespace"))[0]}
        missing = sorted(wanted - made - existing)
        if missing:
            where = next(o for o in objects if namespace_of(o) == missing[0])
            raise NotFound(f'namespaces "{missing[0]}" not found (for {where.ref}; '
                           "apply the Namespace first)", "metadata.namespace")


@click.command()
@FILES
@pass_ctx
def apply(ctx: Context, files: tuple[str, ...]) -> None:
    """Create or update objects from manifests, as `kubectl apply -f`."""
    objects = read_manifests(files)
    # Namespaces first, so that what is in them finds them; the rest in file order.
    ordered = sorted(objects, key=lambda o: not isinstance(o, Namespace))

    async def run(client: Client) -> list[dict[str, Any]]:
        await check_namespaces(client, ordered)
        done = []
        for obj in ordered:
            result = await client.object_apply(obj.canonical())
            if not ctx.json:
                echo(f"{obj.ref} {result['result']}")
            done.append(result)
        return done
    results = ctx.call(run)
    if ctx.json:
        emit_json(results)


def emit(fmt: str, document: dict[str, Any]) -> None:
    if fmt == "json":
        emit_json(document)
    else:
        click.echo(yaml.safe_dump(document, sort_keys=False, default_flow_style=False),
                   nl=False)


def vips_by_service(client_vips: dict[str, Any]) -> dict[str, str]:
    return {v["service"]: v["vip"] for v in client_vips.get("vips", [])}


@click.command()
@click.argument("resource", metavar="KIND")
@click.argument("name", required=False)
@NAMESPACE
@click.option("-A", "--all-namespaces", is_flag=True, help="Every namespace.")
@OUTPUT
@pass_ctx
def get(ctx: Context, resource: str, name: str | None, namespace: str,
        all_namespaces: bool, fmt: str | None) -> None:
    """List objects of KIND (deployments, services, pods, namespaces, hpa), or one.

    Short names as kubectl's: deploy, svc, po, ns."""
    kind = kind_of(resource)
    fmt = fmt or ctx.output
    scope = None if all_namespaces or kind == "Namespace" else namespace
    records, vips = ctx.call(lambda c: fetch(c, kind, scope, fmt))
    if name is not None:
        records = [r for r in records if r["name"] == name]
        if not records:
            raise NotFound(f'{RESOURCES[kind][0]} "{name}" not found'
                           + (f' in namespace "{namespace}"' if scope else ""), "name")
    if fmt in ("json", "yaml"):
        documents = [pod_document(r) if kind == "Pod" else object_document(r)
                     for r in records]
        emit(fmt, documents[0] if name is not None else list_document(documents))
        return
    if not records:
        where = f" in {namespace} namespace" if scope else ""
        click.echo(f"No resources found{where}.", err=True)
        return
    heads, row = columns(kind, fmt == "wide", vips)
    now = time.time()
    rows = [row(r, now, fmt == "wide") for r in records]
    if all_namespaces and kind != "Namespace":
        heads = ["NAMESPACE", *heads]
        rows = [[r["namespace"], *cells] for r, cells in zip(records, rows, strict=True)]
    table(rows, heads)


async def fetch(client: Client, kind: str, namespace: str | None, fmt: str
                ) -> tuple[list[dict[str, Any]], dict[str, str]]:
    """The records to show, and each service's virtual IP (for CLUSTER-IP)."""
    if kind == "Pod":
        return (await client.pods(namespace=namespace))[0], {}
    records = (await client.objects(kind=kind, namespace=namespace))[0]
    if kind == "Namespace" and not any(r["name"] == "default" for r in records):
        records.insert(0, default_namespace())
    vips = vips_by_service((await client.vips())[0]) if kind == "Service" else {}
    return records, vips


def default_namespace() -> dict[str, Any]:
    """"default", which always exists whether or not a manifest made it."""
    return {"kind": "Namespace", "namespace": "", "name": "default", "generation": 1,
            "created": 0.0, "status": {}, "events": [], "revisions": [],
            "manifest": {"apiVersion": "v1", "kind": "Namespace",
                         "metadata": {"name": "default", "namespace": None, "labels": {},
                                      "annotations": {}}}}


@click.command()
@click.argument("words", nargs=-1, required=True, metavar="KIND NAME | KIND/NAME")
@NAMESPACE
@pass_ctx
def describe(ctx: Context, words: tuple[str, ...], namespace: str) -> None:
    """Show one object: its spec, status conditions and events."""
    kind, name = split_ref(words)

    async def run(client: Client) -> str:
        now = time.time()
        if kind == "Pod":
            return describe_pod(await client.pod(name), now)
        if kind == "Namespace" and name == "default":
            try:
                record = (await client.object(kind, "", name))[0]
            except NotFound:
                record = default_namespace()
        else:
            record = (await client.object(kind, "" if kind == "Namespace" else namespace,
                                          name))[0]
        vip = vips_by_service((await client.vips())[0]).get(name, "") \
            if kind == "Service" else ""
        return describe_object(record, now, vip)
    echo(ctx.call(run))


@click.command()
@click.argument("words", nargs=-1, metavar="KIND NAME | KIND/NAME")
@FILES
@NAMESPACE
@click.option("--ignore-not-found", is_flag=True, help="An object that is gone is fine.")
@pass_ctx
def delete(ctx: Context, words: tuple[str, ...], files: tuple[str, ...], namespace: str,
           ignore_not_found: bool) -> None:
    """Delete an object (a Namespace: with everything in it), or those of manifests.

    A pod is asked to stop; its Deployment, if it still wants it, starts another."""
    if files and words:
        raise click.UsageError("give KIND NAME or -f FILE, not both")
    targets: list[tuple[str, str, str]]
    if files:
        targets = [(o.kind, namespace_of(o), o.name) for o in read_manifests(files)]
    else:
        kind, name = split_ref(words)
        targets = [(kind, "" if kind == "Namespace" else namespace, name)]

    async def run(client: Client) -> list[str]:
        missed = []
        for kind, ns, name in targets:
            try:
                if kind == "Pod":
                    await client.pod_terminate(name)
                else:
                    await client.object_delete(kind, ns, name)
            except NotFound as exc:
                if not ignore_not_found:
                    click.echo(f"meshlet: error: {exc.message}", err=True)
                    missed.append(name)
                continue
            echo(f'{RESOURCES[kind][0]} "{name}" deleted')
        return missed
    if ctx.call(run):
        raise SystemExit(1)


@click.command()
@click.argument("words", nargs=-1, required=True, metavar="deployment NAME")
@click.option("--replicas", type=click.IntRange(0), required=True,
              help="How many replicas to run.")
@NAMESPACE
@pass_ctx
def scale(ctx: Context, words: tuple[str, ...], replicas: int, namespace: str) -> None:
    """Set a Deployment's replicas, as `kubectl scale`."""
    kind, name = split_ref(words)
    if kind != "Deployment":
        raise MeshletError(f"only a deployment scales, not {RESOURCES[kind][0]}")
    body = ctx.call(lambda c: c.object_scale(namespace, name, replicas))
    if ctx.json:
        emit_json(body)
    else:
        echo(f"{ref(kind, name)} scaled")


COMMANDS = [apply, get, describe, delete, scale]

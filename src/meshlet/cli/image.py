"""`meshlet image`: import, list, inspect and remove the images of this machine's
store (``<agent data dir>/images``), as `docker image` does. No registry: images come
from files (`docker save`, `podman save`, an OCI layout, or a rootfs tarball)."""

from __future__ import annotations

import datetime
import os
from pathlib import Path
from typing import Any

import click

from meshlet import devmode
from meshlet.cli.context import Context, pass_ctx
from meshlet.cli.render import echo, emit_json, table
from meshlet.errors import Conflict
from meshlet.image.reference import parse_lookup, short_id
from meshlet.image.store import Image, ImageStore, used_by
from meshlet.runtime.rootfs import overlay_lowers

DATA_DIR = click.option(
    "--data-dir", type=click.Path(file_okay=False), default=None,
    help="The agent's data directory, whose images/ is the store (default: the running "
         "`up`'s store, else ~/.meshlet/agent/images).")


def store_for(data_dir: str | None) -> ImageStore:
    return ImageStore(Path(data_dir) / "images" if data_dir else devmode.images_dir())


def inspect_body(image: Image) -> dict[str, Any]:
    """What `docker image inspect` shows, for the keys meshlet has."""
    config = image.config
    return {
        "Id": image.id, "RepoTags": image.tags, "Created": image.created,
        "Size": image.size,
        "Config": {"Entrypoint": None if config.entrypoint is None
                   else list(config.entrypoint),
                   "Cmd": None if config.cmd is None else list(config.cmd),
                   "Env": list(config.env), "WorkingDir": config.working_dir,
                   "ExposedPorts": {p: {} for p in config.exposed_ports},
                   "User": config.user, "Labels": dict(config.labels)},
        "RootFS": {"Type": "layers", "Layers": list(image.diff_ids)},
    }


def human_size(size: int) -> str:
    value = float(size)
    for unit in ("B", "kB", "MB", "GB"):
        if value < 1000 or unit == "GB":
            return f"{value:.0f}{unit}" if unit == "B" else f"{value:.3g}{unit}"
        value /= 1000
    return f"{size}B"


def ago(created: str) -> str:
    try:
        when = datetime.datetime.fromisoformat(created.replace("Z", "+00:00"))
    except ValueError:
        return created or "-"
    if when.tzinfo is None:
        when = when.replace(tzinfo=datetime.UTC)
    seconds = (datetime.datetime.now(datetime.UTC) - when).total_seconds()
    for unit, length in (("day", 86400), ("hour", 3600), ("minute", 60)):
        if seconds >= length:
            n = int(seconds // length)
            return f"{n} {unit}{'s' if n > 1 else ''} ago"
    return "less than a minute ago"


@click.group()
def image() -> None:
    """Images: imported from files, stored on this machine."""


@image.command("import")
@click.argument("file", type=click.Path())
@click.option("--name", "ref", required=True, metavar="NAME[:TAG]",
              help="The image's name (tag: latest if left out).")
@click.option("-c", "--change", "changes", multiple=True, metavar="INSTRUCTION",
              help="A Dockerfile instruction for a rootfs tarball's config (CMD, "
                   "ENTRYPOINT, ENV, WORKDIR, EXPOSE, USER, LABEL); repeat for more.")
@DATA_DIR
@pass_ctx
def image_import(ctx: Context, file: str, ref: str, changes: tuple[str, ...],
                 data_dir: str | None) -> None:
    """Import FILE: a rootfs tarball, a `docker save` archive or an OCI layout."""
    imported = store_for(data_dir).import_file(Path(file), ref, list(changes))
    if ctx.json:
        emit_json(inspect_body(imported))
    else:
        click.echo(imported.id)


@image.command("ls")
@DATA_DIR
@pass_ctx
def image_ls(ctx: Context, data_dir: str | None) -> None:
    """List images."""
    images = store_for(data_dir).images()
    if ctx.json:
        emit_json([inspect_body(i) for i in images])
        return
    rows = []
    for found in images:
        for tag in found.tags or ["<none>:<none>"]:
            name, _, version = tag.rpartition(":")
            rows.append((name, version, short_id(found.id), ago(found.created),
                         human_size(found.size)))
    table(rows, ["REPOSITORY", "TAG", "IMAGE ID", "CREATED", "SIZE"])


@image.command("inspect")
@click.argument("refs", nargs=-1, required=True, metavar="IMAGE...")
@DATA_DIR
def image_inspect(refs: tuple[str, ...], data_dir: str | None) -> None:
    """Show images' config and layers as JSON (as `docker image inspect`)."""
    store = store_for(data_dir)
    emit_json([inspect_body(store.resolve(ref)) for ref in refs])


@image.command("rm")
@click.argument("refs", nargs=-1, required=True, metavar="IMAGE...")
@DATA_DIR
@pass_ctx
def image_rm(ctx: Context, refs: tuple[str, ...], data_dir: str | None) -> None:
    """Remove images (refused while a container uses one)."""
    store = store_for(data_dir)
    images = [store.resolve(ref) for ref in refs]  # said before the API is asked
    containers, _ = ctx.call(lambda c: c.containers())
    in_use = overlay_lowers()
    for ref, found in zip(refs, images, strict=True):
        named = parse_lookup(ref).reference
        untag_only = len(found.tags) > 1 and str(named) in found.tags
        if not untag_only and not used_by(containers, found) and any(
                os.path.realpath(store.layers / diff.removeprefix("sha256:")) in in_use
                for diff in found.diff_ids):  # an up-file service's: no record names it
            raise Conflict(f"image {found.name} is in use: the root filesystem of a "
                           "running container is made of it", "image")
    for ref in refs:
        for line in store.remove(ref, containers):
            echo(line)

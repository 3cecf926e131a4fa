"""From a container's record and its image's config to what runc is given, as Docker
reads an image: the entrypoint and command, the environment, the working directory
and the user (named users and groups looked up in the image's own /etc/passwd and
/etc/group). Pure, but for reading those two files from a mounted rootfs without
following a link out of it."""

from __future__ import annotations

import os
import stat
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from meshlet.image.config import ImageConfig, command_for, env_for, resolve_user
from meshlet.runtime.oci_spec import BindFile, ContainerConfig, ProcessSpec
from meshlet.runtime.runc import cgroup_path

MAX_ACCOUNT_FILE = 1 << 20


def process_spec(record: Mapping[str, Any], image: ImageConfig, passwd: str,
                 group: str) -> ProcessSpec:
    """The process an image container runs; raises ConfigError (nothing to run, an
    unknown user)."""
    args = command_for(image, list(record["entrypoint"]) or None, list(record["command"]))
    uid, gid, groups = resolve_user(record["user"] or image.user, passwd, group)
    hostname = record.get("hostname") or record["name"]
    return ProcessSpec(tuple(args), tuple(env_for(image, dict(record["env"]), hostname)),
                       record["workdir"] or image.working_dir or "/", uid, gid,
                       tuple(groups))


def container_config(record: Mapping[str, Any], image: ImageConfig, rootfs: Path,
                     container_id: str, netns_path: str | None,
                     files: Sequence[BindFile], passwd: str = "", group: str = ""
                     ) -> ContainerConfig:
    return ContainerConfig(
        str(rootfs), record.get("hostname") or record["name"],
        process_spec(record, image, passwd, group),
        cgroup_path(container_id), netns_path, tuple(files), int(record["memory"]),
        float(record["cpus"]), {"io.meshlet.container": record["name"],
                                "io.meshlet.image": record["image"]})


def hosts_file(name: str, addresses: Sequence[str]) -> str:
    """The container's /etc/hosts: loopback, and its own name on each address."""
    lines = ["127.0.0.1\tlocalhost", "::1\tlocalhost ip6-localhost ip6-loopback"]
    lines += [f"{address}\t{name}" for address in addresses]
    return "\n".join(lines) + "\n"


def read_in_rootfs(rootfs: Path, relative: str) -> str:
    """A small text file of the image (``etc/passwd``), or "" if it has none. A path
    that is a link, or leads out of the rootfs, reads as absent: the image does not
    get to make the agent read the host's files."""
    path = rootfs / relative
    real = os.path.realpath(path)
    base = os.path.realpath(rootfs)
    if os.path.commonpath([real, base]) != base:
        return ""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError:
        return ""
    with os.fdopen(fd, "rb") as f:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return ""
        return f.read(MAX_ACCOUNT_FILE).decode(errors="replace")

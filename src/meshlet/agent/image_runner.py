"""Starts image containers on this node: the image from the node's store (its layers
verified as they are read), an overlay rootfs in the container's directory, the
files that point it at the embedded DNS, and runc. Shared by `meshlet run` containers
and `up`-file services that name an ``image:``."""

from __future__ import annotations

import asyncio
import logging
import shutil
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from meshlet.errors import MeshletError, NotFound
from meshlet.image.store import ImageStore
from meshlet.net import netns
from meshlet.private_files import private_dir, write_private
from meshlet.runtime import rootfs
from meshlet.runtime.launch import container_config, hosts_file, read_in_rootfs
from meshlet.runtime.oci_spec import BindFile
from meshlet.runtime.runc import ContainerProcess, Runc, remove_cgroup_parents

log = logging.getLogger(__name__)
RUNC_STATE = Path("/run/meshlet/runc")  # one per host: ids carry the node's prefix
HOST_RESOLV = Path("/etc/resolv.conf")


class ImageRunner:
    def __init__(self, images_dir: Path, node: str, prefix: str,
                 state_dir: Path = RUNC_STATE) -> None:
        self.store = ImageStore(images_dir)
        self.node = node
        self.prefix = prefix
        self.state_dir = state_dir
        self._runc: Runc | None = None

    def __repr__(self) -> str:
        return f"<ImageRunner {self.node}>"

    @property
    def runc(self) -> Runc:
        if self._runc is None:
            self._runc = Runc(self.state_dir)  # raises MeshletError without runc
        return self._runc

    def container_id(self, name: str) -> str:
        return self.prefix + name

    async def start(self, record: Mapping[str, Any], container_dir: Path,
                    namespace: str | None, addresses: Sequence[str], log_path: Path
                    ) -> ContainerProcess:
        """Run ``record``'s image; raises MeshletError (no such image, a corrupt layer,
        nothing to run) or OSError."""
        netns.require_root(f"container {record['name']!r} from an image")
        ref = record["image_id"] or record["image"]
        try:
            image = self.store.resolve(ref)
        except NotFound:
            raise MeshletError(f"no image {record['image']!r} on node {self.node!r} "
                               "(import it there: meshlet image import FILE --name "
                               f"{record['image']})") from None
        layers = await asyncio.to_thread(self.store.layer_dirs, image)
        merged = await asyncio.to_thread(rootfs.mount_overlay, layers, container_dir)
        try:
            private_dir(container_dir)
            hostname = record.get("hostname") or record["name"]
            write_private(container_dir / "hosts", hosts_file(hostname, addresses))
            (container_dir / "hosts").chmod(0o644)
            write_private(container_dir / "hostname", hostname + "\n")
            (container_dir / "hostname").chmod(0o644)
            resolv = netns.RESOLV_DIR / namespace / "resolv.conf" if namespace \
                else HOST_RESOLV
            files = [BindFile(str(resolv), "/etc/resolv.conf"),
                     BindFile(str(container_dir / "hosts"), "/etc/hosts"),
                     BindFile(str(container_dir / "hostname"), "/etc/hostname")]
            config = container_config(
                record, image.config, merged, self.container_id(record["name"]),
                str(netns.RUN_DIR / namespace) if namespace else None, files,
                read_in_rootfs(merged, "etc/passwd"), read_in_rootfs(merged, "etc/group"))
            return await self.runc.start(self.container_id(record["name"]), container_dir,
                                         config, log_path)
        except BaseException:  # nothing to run, a bad user: leave no mount behind
            rootfs.unmount_all(container_dir)
            raise

    async def pid_of(self, process: ContainerProcess, timeout: float = 5.0) -> int:
        """The container's init as the host sees it (runc's pid until it is known)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while process.returncode is None and loop.time() < deadline:
            state = await self.runc.state(process.id)
            if state is not None and state.get("status") == "running" and state.get("pid"):
                return int(state["pid"])
            await asyncio.sleep(0.02)
        return process.pid

    def release(self, container_dir: Path) -> None:
        """Unmount the container's rootfs (its writable layer stays until ``remove``)."""
        rootfs.unmount_all(container_dir)

    def remove(self, container_dir: Path) -> None:
        rootfs.unmount_all(container_dir)
        shutil.rmtree(container_dir, ignore_errors=True)

    def sweep_workloads(self, workloads_dir: Path) -> None:
        """Unmount and remove the image containers an agent killed with -9 left in its
        workloads' directories (their logs stay). Call before any workload starts."""
        if not workloads_dir.is_dir():
            return
        for container_dir in workloads_dir.glob("*/container"):
            left = rootfs.unmount_all(container_dir)
            if left:
                log.info("unmounted rootfs left by an earlier run: %s", ", ".join(left))
            shutil.rmtree(container_dir, ignore_errors=True)

    async def sweep(self, containers_dir: Path) -> None:
        """Remove what an earlier run of this node's agent left: runc containers with
        this node's prefix, and rootfs mounts under its containers directory."""
        if shutil.which("runc") is not None and self.state_dir.exists():
            try:
                await self.runc.sweep(self.prefix)
            except MeshletError as exc:
                log.warning("could not list leftover containers: %s", exc)
        left = rootfs.unmount_all(containers_dir)
        if left:
            log.info("unmounted rootfs left by an earlier run: %s", ", ".join(left))

    def close(self) -> None:
        remove_cgroup_parents()

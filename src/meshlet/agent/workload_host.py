"""What a workload needs from the agent that runs it, and no more: a narrow interface,
so a workload can be driven by a fake host in a test, and the agent's other parts
(containers, watches, networks) stay out of its reach. ``agent.Agent`` implements it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import aiohttp

from meshlet.agent.identity import WorkloadIdentity
from meshlet.observe.agent_metrics import AgentMetrics
from meshlet.proxy.config import Snapshot
from meshlet.runtime.runc import ContainerProcess


@dataclass(frozen=True)
class Sandbox:
    """The network namespace a mesh workload (app and sidecar) runs in, with its
    address on its network."""

    owner: str
    namespace: str
    network: str
    address: str

    def wrap(self, argv: list[str]) -> list[str]:
        """``argv`` run inside the namespace."""
        return ["ip", "netns", "exec", self.namespace, *argv]

    def record(self) -> dict[str, Any]:
        """The workload as its own DNS sees it (the shape of a container record)."""
        return {"networks": [self.network], "addresses": {self.network: self.address}}


class InstanceCatalog(Protocol):
    """The catalog calls a workload makes about itself (``api.client.Client``'s)."""

    async def register(self, **instance: Any) -> dict[str, Any]: ...

    async def deregister(self, instance_id: str) -> None: ...

    async def set_health(self, instance_id: str, status: str, output: str = "",
                         restarts: int | None = None, pid: int | None = None) -> None: ...


class WorkloadHost(Protocol):
    @property
    def node(self) -> str: ...

    @property
    def zone(self) -> str: ...

    @property
    def data_dir(self) -> Path:
        """Workloads keep their files under ``data_dir / "workloads"``."""

    @property
    def client(self) -> InstanceCatalog: ...

    @property
    def metrics(self) -> AgentMetrics:
        """Where a workload counts its restarts, checks and failed reports."""

    @property
    def http(self) -> aiohttp.ClientSession:
        """A session for health checks (sidecars' admin APIs have their own, on their
        Unix sockets)."""

    def snapshot(self, bootstrap: Snapshot) -> Snapshot:
        """The config a sidecar started from ``bootstrap`` should run now (a newer
        version each call)."""

    def guarded(self, bootstrap: Snapshot) -> Snapshot:
        """``bootstrap`` with the intentions its service enforces now, so a sidecar
        starts guarded."""

    async def upstream_ends(self, upstreams: Sequence[str], timeout: float
                            ) -> dict[str, tuple[str, int]]:
        """Each upstream's virtual IP and port; raises Unavailable after ``timeout``."""

    async def open_sandbox(self, instance: str, network: str, loopback: Sequence[str]
                           ) -> Sandbox:
        """A namespace of its own on ``network``, with ``loopback`` addresses on its
        loopback; raises MeshletError."""

    async def close_sandbox(self, box: Sandbox) -> None: ...

    def identity(self, service: str, directory: Path) -> WorkloadIdentity | None:
        """The workload's identity (key, certificate, trust bundle) kept in
        ``directory``, or None where there is no CA to ask."""

    async def start_image(self, record: dict[str, Any], container_dir: Path,
                          namespace: str | None, addresses: Sequence[str],
                          log_path: Path) -> ContainerProcess:
        """Run an image container (``record`` shaped as a container's); raises
        MeshletError, OSError."""

    def release_image(self, container_dir: Path) -> None:
        """Unmount what ``start_image`` mounted there."""

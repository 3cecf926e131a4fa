"""A workload driven by a fake host through ``WorkloadHost`` alone: its sandbox and
the config it derives from it, its reports to the catalog (registering again when the
server forgot it), and what stopping gives back."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import aiohttp

from meshlet.agent.workload import Workload
from meshlet.agent.workload_host import Sandbox, WorkloadHost
from meshlet.deploy.manifest import ServiceSpec
from meshlet.errors import NotFound
from meshlet.observe.agent_metrics import AgentMetrics
from meshlet.proxy.config import Snapshot


class FakeCatalog:
    def __init__(self, forgets: int = 0) -> None:
        self.calls: list[tuple[str, Any]] = []
        self.forgets = forgets          # set_health answers 404 this many times
        self.healthy = asyncio.Event()  # a health report landed

    async def register(self, **instance: Any) -> dict[str, Any]:
        self.calls.append(("register", instance["id"]))
        return {}

    async def deregister(self, instance_id: str) -> None:
        self.calls.append(("deregister", instance_id))

    async def set_health(self, instance_id: str, status: str, output: str = "",
                         restarts: int | None = None, pid: int | None = None) -> None:
        if self.forgets:
            self.forgets -= 1
            self.calls.append(("health", "404"))
            raise NotFound(f"no instance {instance_id!r}")
        self.calls.append(("health", status))
        self.healthy.set()


class FakeHost:
    def __init__(self, data_dir: Path, catalog: FakeCatalog) -> None:
        self.node = "n1"
        self.zone = "z1"
        self.data_dir = data_dir
        self.client = catalog
        self.metrics = AgentMetrics()
        self.opened: list[tuple[str, str, list[str]]] = []
        self.closed: list[Sandbox] = []

    @property
    def http(self) -> aiohttp.ClientSession:
        raise AssertionError("no HTTP in these tests")

    def snapshot(self, bootstrap: Snapshot) -> Snapshot:
        return bootstrap

    def guarded(self, bootstrap: Snapshot) -> Snapshot:
        return bootstrap

    async def upstream_ends(self, upstreams: Sequence[str], timeout: float
                            ) -> dict[str, tuple[str, int]]:
        return {u: ("10.99.0.2", 8080) for u in upstreams}

    async def open_sandbox(self, instance: str, network: str, loopback: Sequence[str]
                           ) -> Sandbox:
        self.opened.append((instance, network, list(loopback)))
        return Sandbox(f"svc:n1:{instance}", f"ml-x-svc.{instance}", network, "10.40.0.7")

    async def close_sandbox(self, box: Sandbox) -> None:
        self.closed.append(box)

    def identity(self, service: str, directory: Path) -> None:
        return None  # no CA here


def workload(tmp_path: Path, catalog: FakeCatalog | None = None,
             **spec: Any) -> tuple[Workload, FakeHost]:
    fake = FakeHost(tmp_path, catalog or FakeCatalog())
    host: WorkloadHost = fake  # the fake satisfies the Protocol (checked by mypy)
    return Workload(host, "web", 0, ServiceSpec(command=["app"], **spec), tmp_path,
                    {"catalog": "http"}), fake


async def test_the_host_gives_the_sandbox_and_the_workload_uses_it(tmp_path: Path) -> None:
    w, fake = workload(tmp_path, network="front", upstreams=["catalog"])
    assert (w.bootstrap.zone, w.bootstrap.node) == ("z1", "n1")
    assert w.run_dir == tmp_path / "workloads" / "web-0"
    await w.open_sandbox()
    assert fake.opened == [("web-0", "front", ["10.99.0.2"])]
    assert w.app_host == "10.40.0.7" and w.app_port == 80
    assert w.wrap(["app"]) == ["ip", "netns", "exec", "ml-x-svc.web-0", "app"]
    assert w.app_env({})["MESHLET_UPSTREAM_CATALOG"] == "catalog:8080"
    outbound = [lc for lc in w.bootstrap.listeners if lc.direction == "outbound"]
    assert [(lc.name, lc.host, lc.port) for lc in outbound] == [("catalog", "10.99.0.2",
                                                                  8080)]
    await w.stop()
    assert fake.client.calls == [("deregister", "web-0")]
    assert [box.owner for box in fake.closed] == ["svc:n1:web-0"] and w.sandbox is None


async def test_a_forgotten_instance_registers_again(tmp_path: Path) -> None:
    catalog = FakeCatalog(forgets=1)
    w, _ = workload(tmp_path, catalog)
    w.ports = {"inbound:web": 15001}
    w.tasks = [asyncio.get_running_loop().create_task(w.reporter())]
    w.report_needed.set()
    await asyncio.wait_for(catalog.healthy.wait(), 10)
    await w.stop()
    assert catalog.calls == [("register", "web-0"), ("health", "404"),
                             ("register", "web-0"), ("health", "critical"),
                             ("deregister", "web-0")]

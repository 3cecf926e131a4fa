"""The Services' gateways and the pods' overlay (``agent/service_gateways.py``): the
host joins it while a Service is published, tries again on a new snapshot while the
network does not exist, retries a failed join, and leaves once the last Service is
gone (again later, if leaving failed). The sandboxes are a fake; tests/netns runs the
same with real agents and links."""

from __future__ import annotations

from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any

from meshlet.agent.service_gateways import ServiceGateways
from meshlet.backoff import Backoff
from meshlet.deploy.published import Published
from meshlet.errors import NetworkError
from tests.conftest import async_wait_until

WEB = Published(30080, "web", 80, "http")


@dataclass
class FakeSandboxes:
    """``exists``: whether the network exists; ``fail_join`` / ``fail_leave``: how
    many of those calls fail before one succeeds."""

    exists: bool = True
    fail_join: int = 0
    fail_leave: int = 0
    joins: list[str] = field(default_factory=list)
    leaves: list[str] = field(default_factory=list)
    on: bool = False

    async def join(self, network: str) -> bool:
        self.joins.append(network)
        if self.fail_join:
            self.fail_join -= 1
            raise NetworkError("cannot make the tunnel of network 'pods': injected")
        if not self.exists:
            return False
        self.on = True
        return True

    async def leave(self, network: str) -> None:
        self.leaves.append(network)
        if self.fail_leave:
            self.fail_leave -= 1
            raise NetworkError("cannot remove the bridge of network 'pods': injected")
        self.on = False


class QuietGateway:
    bootstrap = None

    async def stop(self, grace: float) -> None:
        return None

    def apply(self, snapshot: Any) -> None:
        return None


def gateways_with(sandboxes: FakeSandboxes) -> ServiceGateways:
    host = SimpleNamespace(sandboxes=sandboxes, pods=SimpleNamespace(network="pods"),
                           snapshot=lambda bootstrap: None)
    gateways = ServiceGateways(host)
    return gateways


def published(gateways: ServiceGateways) -> None:
    """As ``publish`` leaves it once the gateway listens."""
    gateways.gateways[WEB] = QuietGateway()  # type: ignore[assignment]
    gateways.reach_replicas()


async def joined(gateways: ServiceGateways) -> bool:
    return gateways.joined


async def test_a_published_service_joins_the_pods_overlay_and_the_last_one_leaves() -> None:
    sandboxes = FakeSandboxes()
    gateways = gateways_with(sandboxes)
    gateways.reach_replicas()  # nothing published: nothing to join
    assert gateways.joining is None
    published(gateways)
    await async_wait_until(lambda: joined(gateways), 5, "the host to join")
    gateways.push(None)  # joined: not again
    assert sandboxes.joins == ["pods"] and sandboxes.on
    await gateways.apply([])
    assert sandboxes.leaves == ["pods"] and not sandboxes.on and not gateways.joined


async def test_a_network_that_does_not_exist_yet_is_joined_on_a_later_snapshot() -> None:
    sandboxes = FakeSandboxes(exists=False)
    gateways = gateways_with(sandboxes)
    published(gateways)
    assert gateways.joining is not None
    await gateways.joining
    assert not gateways.joined and sandboxes.joins == ["pods"]
    sandboxes.exists = True  # the first pod made it, and its instance is pushed
    gateways.push("web")
    await async_wait_until(lambda: joined(gateways), 5, "the host to join")
    await gateways.stop()
    assert not sandboxes.on


async def test_a_failed_join_is_retried_and_a_failed_leave_by_the_next_change(
        monkeypatch: Any) -> None:
    monkeypatch.setattr("meshlet.agent.service_gateways.Backoff",
                        lambda cap: Backoff(base=0.0, cap=0.0))  # no waits between tries
    sandboxes = FakeSandboxes(fail_join=2, fail_leave=1)
    gateways = gateways_with(sandboxes)
    published(gateways)
    await async_wait_until(lambda: joined(gateways), 5, "the host to join")
    assert sandboxes.joins == ["pods"] * 3
    await gateways.apply([])
    assert gateways.joined and sandboxes.on  # still on it: left on the next change
    await gateways.apply([])
    assert not gateways.joined and not sandboxes.on and sandboxes.leaves == ["pods"] * 2

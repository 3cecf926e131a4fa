"""The agent's ingress gateway, as Consul's: where clients outside the mesh come in.

Inside the mesh every hop is mutual TLS, and a service's inbound port refuses anyone
without a certificate of the cluster. A service an up file publishes (``ingress:
PORT``) is reached instead on a plaintext listener of this gateway, on the host's
loopback, which balances across the service's instances and calls them in mutual TLS
as its own identity (``spiffe://…/svc/ingress-gateway``), so intentions can allow or
deny it like any caller. It is a sidecar run inside the agent: the same listeners,
pools, balancing and resilience, fed the same snapshots.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import replace
from typing import TYPE_CHECKING

from meshlet.agent.sidecar_config import LOOPBACK
from meshlet.errors import ConfigError, Unavailable
from meshlet.proxy.config import ListenerConfig, Snapshot
from meshlet.proxy.sidecar import Sidecar

if TYPE_CHECKING:
    from meshlet.agent.identity import WorkloadIdentity
    from meshlet.proxy.config import TlsConfig

log = logging.getLogger(__name__)
SERVICE = "ingress-gateway"
IDENTITY_TIMEOUT = 30.0


class IngressGateway:
    """Plaintext listeners for ``published`` services (name → (port, protocol); port
    0: one the kernel chooses), calling them in mutual TLS with ``identity``'s
    certificate (plaintext where the agent has no CA: ``identity`` None)."""

    def __init__(self, published: dict[str, tuple[int, str]], node: str, zone: str,
                 identity: WorkloadIdentity | None, host: str = LOOPBACK) -> None:
        self.published = published
        self.identity = identity
        listeners = tuple(ListenerConfig(name, "outbound", host, port, protocol)
                          for name, (port, protocol) in sorted(published.items()))
        self.bootstrap = Snapshot(0, SERVICE, f"{SERVICE}-{node}", listeners, {}, zone, node)
        self.sidecar: Sidecar | None = None
        self.pushes: set[asyncio.Task[None]] = set()

    def __repr__(self) -> str:
        return f"<IngressGateway {self.addresses() or sorted(self.published)}>"

    async def start(self) -> None:
        """Bind the listeners (once the gateway has its certificate); raises
        Unavailable or OSError naming the address."""
        if self.identity is not None:
            try:
                await asyncio.wait_for(self.identity.ready.wait(), IDENTITY_TIMEOUT)
            except TimeoutError:
                raise Unavailable(f"the ingress gateway has no certificate from the "
                                  f"cluster CA after {IDENTITY_TIMEOUT:.0f}s") from None
            self.bootstrap = replace(self.bootstrap, tls=self.identity.tls())
        sidecar = Sidecar(self.bootstrap)
        await sidecar.start()
        self.sidecar = sidecar
        log.info("ingress gateway: %s", ", ".join(
            f"{name} on {address}" for name, address in sorted(self.addresses().items())))

    def addresses(self) -> dict[str, str]:
        """Where each published service is reached (once started)."""
        if self.sidecar is None:
            return {}
        host = {lc.name: lc.host for lc in self.bootstrap.listeners}
        return {name.partition(":")[2]: f"{host[name.partition(':')[2]]}:{port}"
                for name, port in self.sidecar.ports().items()}

    def renewed_tls(self) -> TlsConfig | None:
        """The tls block for the files on disk now (a renewal), or None if unreadable."""
        if self.identity is None:
            return None
        try:
            return self.identity.tls()
        except (ConfigError, OSError) as exc:
            log.warning("ingress gateway: renewed certificate not readable yet: %s", exc)
            return None

    def apply(self, snapshot: Snapshot) -> None:
        """Run ``snapshot`` (built from the bootstrap, as every sidecar's is)."""
        if self.sidecar is None:
            return
        try:
            self.sidecar.apply(snapshot)
        except ConfigError as exc:  # refused whole: the gateway keeps its last config
            log.warning("ingress gateway refused config version %d: %s", snapshot.version,
                        exc)

    async def stop(self, grace: float = 10.0) -> None:
        if self.sidecar is not None:
            await self.sidecar.stop(grace)
            self.sidecar = None

"""Runs a server: recover the node, serve the API, stop cleanly on request."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import Any

from aiohttp import web

from meshlet.api.routes import Api
from meshlet.server.node import ServerNode
from meshlet.server.raft_node import PeerAddress, RaftServerNode

log = logging.getLogger(__name__)


class Server:
    """A started server; ``url`` is where its API listens (the real port if 0 was asked)."""

    def __init__(self, node: Any, runner: web.AppRunner, url: str) -> None:
        self.node = node
        self.runner = runner
        self.url = url

    def __repr__(self) -> str:
        return f"<Server {self.url} {self.node!r}>"

    @classmethod
    async def start(cls, data_dir: Path, host: str, port: int, snapshot_every: int = 1000,
                    raft_id: str | None = None,
                    peers: dict[str, PeerAddress] | None = None) -> Server:
        """Raises StorageError on a corrupt log, OSError if the port is taken. With
        ``raft_id`` and ``peers``, writes are replicated with Raft."""
        node: ServerNode | RaftServerNode
        if raft_id is not None and peers:
            node = RaftServerNode(data_dir, raft_id, peers)
        else:
            node = ServerNode(data_dir, snapshot_every)
        await node.open()
        runner = web.AppRunner(Api(node).app(), access_log=None, shutdown_timeout=1.0)
        await runner.setup()
        site = web.TCPSite(runner, host, port, reuse_address=True)
        try:
            await site.start()
        except OSError:
            await runner.cleanup()
            await node.stop()
            raise
        real_port = int(runner.addresses[0][1])
        url = f"http://{host}:{real_port}"
        log.info("server API at %s (data in %s)", url, data_dir)
        return cls(node, runner, url)

    async def stop(self) -> None:
        await self.runner.cleanup()
        await self.node.stop()


async def serve_forever(data_dir: Path, host: str, port: int, stop: asyncio.Event,
                        snapshot_every: int = 1000, raft_id: str | None = None,
                        peers: dict[str, PeerAddress] | None = None) -> None:
    server = await Server.start(data_dir, host, port, snapshot_every, raft_id, peers)
    print(f"meshlet server: API at {server.url}, data in {data_dir}", flush=True)
    try:
        await stop.wait()
    finally:
        await server.stop()

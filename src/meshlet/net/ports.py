"""Port publishing without iptables: a userland forwarder from a host port to a
workload's address, as Docker's userland proxy does."""

from __future__ import annotations

import asyncio
import contextlib
import logging

log = logging.getLogger(__name__)


class PortForwarder:
    def __init__(self, host_ip: str, host_port: int, target: str, port: int) -> None:
        self.listen = (host_ip, host_port)
        self.target = (target, port)
        self.server: asyncio.Server | None = None
        self.pipes: set[asyncio.Task[None]] = set()

    def __repr__(self) -> str:
        return f"<PortForwarder {self.listen} -> {self.target}>"

    async def start(self) -> None:
        """Raises OSError when the host port is taken."""
        self.server = await asyncio.start_server(self.accept, *self.listen,
                                                 reuse_address=True)

    async def accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection(*self.target)
        except OSError as exc:
            log.info("%s: cannot reach the workload: %s", self, exc)
            writer.close()
            return
        tasks = [asyncio.ensure_future(copy(reader, up_writer)),
                 asyncio.ensure_future(copy(up_reader, writer))]
        self.pipes.update(tasks)
        try:
            await asyncio.gather(*tasks)
        finally:
            self.pipes.difference_update(tasks)
            writer.close()
            up_writer.close()

    async def stop(self) -> None:
        if self.server is not None:
            self.server.close()
            await self.server.wait_closed()
        for task in list(self.pipes):
            task.cancel()
        for task in list(self.pipes):
            with contextlib.suppress(asyncio.CancelledError):
                await task


async def copy(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
    """Copy until EOF, then half-close, so either side may finish first."""
    try:
        while data := await src.read(65536):
            dst.write(data)
            await dst.drain()
        if dst.can_write_eof():
            dst.write_eof()
    except (OSError, ConnectionError):
        dst.close()
    except asyncio.CancelledError:
        dst.close()
        raise

"""`meshlet prometheus-sd FILE`: keep a Prometheus file_sd list of every server, agent and
sidecar of the mesh (docs/observability.md, "Prometheus").

What is listed is ``observe/file_sd.py``'s, how the file is kept ``observe/
file_sd_writer.py``'s; this module parses, runs it until SIGINT/SIGTERM and reports.
"""

from __future__ import annotations

import asyncio
import signal
from pathlib import Path

import click

from meshlet.api.client import Client
from meshlet.cli.capacity import Number
from meshlet.cli.context import Context, pass_ctx
from meshlet.errors import ConfigError
from meshlet.observe.file_sd_writer import WATCH_WAIT, keep_current


@click.command("prometheus-sd")
@click.argument("file", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--once", is_flag=True, help="Write the file once and exit.")
@click.option("--wait", "wait", type=Number(float, 0.1, 300.0), default=WATCH_WAIT,
              show_default=True, metavar="SECONDS",
              help="Longest wait of each blocking query (changes to the Raft members, "
                   "which have no index to wait on, are seen at least this often).")
@pass_ctx
def prometheus_sd(ctx: Context, file: Path, once: bool, wait: float) -> None:
    """Write FILE, a Prometheus file_sd target list of every server, agent and sidecar
    (jobs meshlet-server, meshlet-agent, meshlet-sidecar), and keep it current until
    interrupted. FILE is replaced atomically, and only when the targets change."""
    if not file.absolute().parent.is_dir():
        raise ConfigError(f"{file}: no directory {file.absolute().parent}", "file")

    def wrote(count: int) -> None:
        click.echo(f"meshlet prometheus-sd: wrote {count} targets to {file}", err=True)

    async def run() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        async with Client(ctx.addr, token=ctx.token) as client:
            await keep_current(client, file, stop, once, wait, wrote)
    asyncio.run(run())

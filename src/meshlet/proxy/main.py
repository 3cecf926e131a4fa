"""``meshlet proxy``: run one sidecar until SIGTERM/SIGINT, then drain and exit."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import signal
from pathlib import Path

from aiohttp import web

from meshlet.errors import ConfigError
from meshlet.proxy.admin import admin_app
from meshlet.proxy.config import Snapshot
from meshlet.proxy.sidecar import Sidecar

log = logging.getLogger(__name__)


def load_bootstrap(path: Path) -> Snapshot:
    try:
        return Snapshot.from_dict(json.loads(path.read_text()))
    except (OSError, ValueError) as exc:
        raise ConfigError(f"cannot read sidecar bootstrap {path}: {exc}", "config") from None


def write_port_file(path: Path, body: dict[str, object]) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(body))
    os.replace(tmp, path)


async def run_proxy(bootstrap: Snapshot, admin_host: str, admin_port: int,
                    port_file: Path | None, grace: float) -> None:
    """Serve until SIGTERM. ``admin_host`` ``unix:PATH`` puts the admin API on a Unix
    socket, which an agent reaches from outside the sidecar's network namespace."""
    sidecar = Sidecar(bootstrap)
    await sidecar.start()
    runner = web.AppRunner(admin_app(sidecar), access_log=None, shutdown_timeout=0.5)
    await runner.setup()
    admin: int | str
    if admin_host.startswith("unix:"):
        admin = admin_host
        Path(admin_host[5:]).unlink(missing_ok=True)
        await web.UnixSite(runner, admin_host[5:]).start()
    else:
        await web.TCPSite(runner, admin_host, admin_port, reuse_address=True).start()
        admin = int(runner.addresses[0][1])
    if port_file is not None:
        write_port_file(port_file, {"admin": admin, "pid": os.getpid(),
                                    "listeners": sidecar.ports()})
    log.info("sidecar %s ready: admin %s, listeners %s", bootstrap.instance, admin,
             sidecar.ports())
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    await sidecar.stop(grace)
    await runner.cleanup()

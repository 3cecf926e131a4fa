"""``meshlet proxy``: run one sidecar until SIGTERM/SIGINT, then drain and exit.

The agent starts sidecars as ``python -m meshlet proxy``; ``meshlet/__main__.py`` sends
that here before the CLI is imported, so a sidecar process holds only the data plane
(``proxy/``, ``observe/``, ``errors`` and a few leaf modules; uvloop and httptools) and
stays small: ``tests/integration/test_sidecar_process.py`` fails on anything more. The
click command in ``cli/main.py`` is only an alias for listings and help.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import signal
import sys
from collections.abc import Sequence

from meshlet.addresses import parse_hostport
from meshlet.errors import ConfigError, MeshletError
from meshlet.loop import install_uvloop
from meshlet.proxy.admin import AdminApi
from meshlet.proxy.admin_http import serve
from meshlet.proxy.config import Snapshot
from meshlet.proxy.sidecar import Sidecar

log = logging.getLogger(__name__)
PROG = "meshlet proxy"


def load_bootstrap(path: str) -> Snapshot:
    try:
        with open(path) as file:
            return Snapshot.from_dict(json.loads(file.read()))
    except (OSError, ValueError) as exc:
        raise ConfigError(f"cannot read sidecar bootstrap {path}: {exc}", "config") from None


def write_port_file(path: str, body: dict[str, object]) -> None:
    tmp = os.path.splitext(path)[0] + ".tmp"
    with os.fdopen(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "w") as file:
        file.write(json.dumps(body))
    os.replace(tmp, path)


async def run_proxy(bootstrap: Snapshot, admin_host: str, admin_port: int,
                    port_file: str | None, grace: float) -> None:
    """Serve until SIGTERM. ``admin_host`` ``unix:PATH`` puts the admin API on a Unix
    socket, which an agent reaches from outside the sidecar's network namespace."""
    sidecar = Sidecar(bootstrap)
    await sidecar.start()
    try:
        admin = await serve(AdminApi(sidecar).handle, admin_host, admin_port)
    except OSError:
        await sidecar.stop(0)
        raise
    if port_file is not None:
        write_port_file(port_file, {"admin": admin.address, "pid": os.getpid(),
                                    "listeners": sidecar.ports()})
    log.info("sidecar %s ready: admin %s, listeners %s", bootstrap.instance, admin.address,
             sidecar.ports())
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    await sidecar.stop(grace)
    await admin.stop()


class Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # type: ignore[override]
        self.print_usage(sys.stderr)
        self.exit(2, f"{PROG}: error: {message}\n")


def existing_file(value: str) -> str:
    if not os.path.isfile(value):
        raise argparse.ArgumentTypeError(f"file {value!r} does not exist")
    return value


def parser() -> argparse.ArgumentParser:
    p = Parser(prog=PROG, description="Run a sidecar proxy (normally started by the agent).")
    p.add_argument("--bootstrap", required=True, type=existing_file, metavar="FILE",
                   help="Initial snapshot (JSON): listeners and clusters.")
    p.add_argument("--admin", default="127.0.0.1:0",
                   help="Admin API address: HOST:PORT, or unix:PATH for a Unix socket "
                        "(default: %(default)s).")
    p.add_argument("--port-file", default=None, metavar="FILE",
                   help="Write the bound ports here (JSON) once listening.")
    p.add_argument("--grace", type=float, default=10.0,
                   help="Drain time on SIGTERM in seconds (default: %(default)s).")
    return p


def run(bootstrap: str, admin: str, port_file: str | None, grace: float) -> None:
    """Load, listen, serve until a signal; raise MeshletError for what the user can fix."""
    snapshot = load_bootstrap(bootstrap)
    host, port = (admin, 0) if admin.startswith("unix:") else parse_hostport(admin, "--admin")
    install_uvloop()
    try:
        asyncio.run(run_proxy(snapshot, host, port, port_file, grace))
    except OSError as exc:
        raise MeshletError(str(exc)) from None


def main(argv: Sequence[str] | None = None) -> int:
    """``meshlet proxy ARGS``: the exit status (1 and one line on stderr on error)."""
    args = parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        run(args.bootstrap, args.admin, args.port_file, args.grace)
    except MeshletError as exc:
        print(f"meshlet: error: {exc.message}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    return 0

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
import contextlib
import json
import logging
import os
import signal
import sys
from collections.abc import Sequence
from dataclasses import dataclass

from meshlet.addresses import parse_hostport
from meshlet.errors import ConfigError, MeshletError
from meshlet.json_limits import MAX_SNAPSHOT_BYTES, loads
from meshlet.loop import freeze_startup_heap, install_uvloop
from meshlet.proxy.admin import AdminApi
from meshlet.proxy.admin_http import AdminServer, Handler, serve
from meshlet.proxy.config import Snapshot
from meshlet.proxy.sidecar import Sidecar

log = logging.getLogger(__name__)
PROG = "meshlet proxy"


def load_bootstrap(path: str) -> Snapshot:
    try:
        with open(path, "rb") as file:
            raw = file.read(MAX_SNAPSHOT_BYTES + 1)
        body = loads(raw, "its text", MAX_SNAPSHOT_BYTES)  # bounded, no NaN or Infinity
    except OSError as exc:
        raise ConfigError(f"cannot read sidecar bootstrap {path}: {exc}", "config") from None
    except ConfigError as exc:
        raise ConfigError(f"cannot read sidecar bootstrap {path}: {exc.message}",
                          "config") from None
    try:
        return Snapshot.from_dict(body)
    except ValueError as exc:
        raise ConfigError(f"cannot read sidecar bootstrap {path}: {exc}", "config") from None


def write_port_file(path: str, body: dict[str, object]) -> None:
    tmp = os.path.splitext(path)[0] + ".tmp"
    with os.fdopen(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "w") as file:
        file.write(json.dumps(body))
    os.replace(tmp, path)


@dataclass(frozen=True)
class AdminPlan:
    """Where the admin API listens and who may use it (see ``admin_access``): a Unix
    socket (mode 0600) needs no token unless ``token_file`` is set; TCP always has one."""

    host: str                     # or unix:PATH
    port: int = 0
    token_file: str | None = None
    metrics: tuple[str, int] | None = None   # the read-only listener


def plan_admin(bootstrap: str, admin: str | None, token_file: str | None,
               metrics: str | None) -> AdminPlan:
    """Raise ConfigError for an address that is not ``HOST:PORT`` or ``unix:PATH``."""
    here = os.path.dirname(os.path.abspath(bootstrap))
    admin = admin or f"unix:{os.path.join(here, 'admin.sock')}"
    scrape = parse_hostport(metrics, "--metrics") if metrics else None
    if admin.startswith("unix:"):
        return AdminPlan(admin, 0, token_file, scrape)
    host, port = parse_hostport(admin, "--admin")
    return AdminPlan(host, port, token_file or os.path.join(here, "admin.token"), scrape)


async def open_admin(sidecar: Sidecar, plan: AdminPlan
                     ) -> tuple[AdminServer, AdminServer | None]:
    """The admin server (guarded by a fresh token written to ``plan.token_file``) and
    the metrics server, if asked for. Raises OSError naming what failed."""
    api = AdminApi(sidecar)
    handle: Handler = api.handle
    if plan.token_file is not None:
        from meshlet.private_files import write_private  # pathlib: only on this path
        from meshlet.proxy.admin_access import new_token, require_token
        from meshlet.proxy.admin_socket import check_private_dir
        token = new_token()
        try:
            check_private_dir(plan.token_file, "admin token")
            write_private(plan.token_file, token + "\n")
        except OSError as exc:
            raise OSError(exc.errno, f"cannot write the admin token to {plan.token_file}: "
                                     f"{exc.strerror or exc}") from None
        handle = require_token(handle, token)
    admin: AdminServer | None = None
    try:
        admin = await serve(handle, plan.host, plan.port)
        metrics = await serve(api.handle_public, *plan.metrics) if plan.metrics else None
    except OSError:
        if admin is not None:
            await admin.stop()
        remove_token(plan)
        raise
    return admin, metrics


async def run_proxy(bootstrap: Snapshot, plan: AdminPlan, port_file: str | None,
                    grace: float) -> None:
    """Serve until SIGTERM. The agent puts the admin API on a Unix socket, which it
    reaches from outside the sidecar's network namespace."""
    sidecar = Sidecar(bootstrap)
    await sidecar.start()
    try:
        admin, metrics = await open_admin(sidecar, plan)
    except OSError:
        await sidecar.stop(0)
        raise
    if port_file is not None:
        write_port_file(port_file, {
            "admin": admin.address, "token_file": plan.token_file,
            "metrics": metrics.address if metrics else None, "pid": os.getpid(),
            "listeners": sidecar.ports()})
    log.info("sidecar %s ready: admin %s, listeners %s", bootstrap.instance, admin.address,
             sidecar.ports())
    freeze_startup_heap()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    await sidecar.stop(grace)
    await admin.stop()
    if metrics is not None:
        await metrics.stop()
    remove_token(plan)


def remove_token(plan: AdminPlan) -> None:
    if plan.token_file is not None:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(plan.token_file)


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
    p.add_argument("--admin", default=None, metavar="ADDR",
                   help="Admin API address: unix:PATH for a Unix socket of mode 0600 (in "
                        "a directory only its owner can write), or HOST:PORT, which needs "
                        "the token the sidecar writes to --admin-token-file (default: "
                        "unix:admin.sock beside the bootstrap file).")
    p.add_argument("--admin-token-file", default=None, metavar="FILE",
                   help="Where to write (mode 0600) the token every admin request must "
                        "carry (default for a TCP --admin: admin.token beside the "
                        "bootstrap file; none for a Unix socket).")
    p.add_argument("--metrics", default=None, metavar="HOST:PORT",
                   help="Also serve GET /metrics and GET /ready, read-only and without a "
                        "token, on this TCP address (for Prometheus).")
    p.add_argument("--port-file", default=None, metavar="FILE",
                   help="Write the bound ports here (JSON) once listening.")
    p.add_argument("--grace", type=float, default=10.0,
                   help="Drain time on SIGTERM in seconds (default: %(default)s).")
    return p


def run(bootstrap: str, admin: str | None, port_file: str | None, grace: float,
        metrics: str | None = None, token_file: str | None = None) -> None:
    """Load, listen, serve until a signal; raise MeshletError for what the user can fix."""
    snapshot = load_bootstrap(bootstrap)
    plan = plan_admin(bootstrap, admin, token_file, metrics)
    install_uvloop()
    try:
        asyncio.run(run_proxy(snapshot, plan, port_file, grace))
    except OSError as exc:
        raise MeshletError(str(exc)) from None


def access_to_stderr() -> None:
    """The access log's JSON lines, bare, on stderr (the agent sends it to the
    workload's ``sidecar.log``); its settings (``access_log``) choose which requests."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(message)s"))
    access = logging.getLogger("meshlet.access")
    access.addHandler(handler)
    access.setLevel(logging.INFO)
    access.propagate = False


def main(argv: Sequence[str] | None = None) -> int:
    """``meshlet proxy ARGS``: the exit status (1 and one line on stderr on error)."""
    args = parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    access_to_stderr()
    try:
        run(args.bootstrap, args.admin, args.port_file, args.grace, args.metrics,
            args.admin_token_file)
    except MeshletError as exc:
        print(f"meshlet: error: {exc.message}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    return 0

"""`meshlet top`: golden signals per service and per edge, live, from ``/v1/signals``.

The server samples the sidecars only while someone asks, so the first answers may hold
no window yet; ``--once`` waits (bounded) for one with data, then prints it.
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
import time
from typing import Any

import click
from rich.console import Console, Group
from rich.live import Live
from rich.table import Table
from rich.text import Text

from meshlet.api.client import Client
from meshlet.cli.context import Context, pass_ctx
from meshlet.cli.render import clean, emit_json
from meshlet.errors import Unavailable

REFRESH = 2.0
ONCE_WAIT = 30.0


@click.command()
@click.option("--once", is_flag=True, help="Print one snapshot (once a window has data).")
@pass_ctx
def top(ctx: Context, once: bool) -> None:
    """Show every service's and edge's request rate, errors and latency, live."""
    if once or ctx.json:
        body = ctx.call(lambda c: snapshot(c, ONCE_WAIT))
        if ctx.json:
            emit_json(body)
        else:
            Console(highlight=False).print(view(body))
        return
    try:
        asyncio.run(live(ctx))
    except KeyboardInterrupt:
        pass


async def snapshot(client: Client, wait: float) -> dict[str, Any]:
    """The first answer with a window (or the last one after ``wait`` seconds)."""
    deadline = time.monotonic() + wait
    while True:
        body = await client.signals()
        if body.get("window") is not None or time.monotonic() > deadline:
            return body
        await asyncio.sleep(0.5)


async def live(ctx: Context) -> None:
    """Redraw in place on a terminal; elsewhere (a pipe, a file) print each snapshot
    after the last, as ``top -b`` does."""
    console = Console(highlight=False)
    async with Client(ctx.addr, token=ctx.token, pooled=False) as client:
        body = await client.signals()
        if not console.is_terminal:
            while True:
                console.print(view(body))
                console.print()
                sys.stdout.flush()
                await asyncio.sleep(REFRESH)
                with contextlib.suppress(Unavailable):
                    body = await client.signals()
        with Live(view(body), console=console, auto_refresh=False) as screen:
            while True:
                await asyncio.sleep(REFRESH)
                try:
                    body = await client.signals()
                except Unavailable:
                    continue
                screen.update(view(body), refresh=True)


def view(body: dict[str, Any]) -> Group:
    services = Table(title=Text(_title(body)), title_justify="left", box=None)
    for name in ("SERVICE", "INSTANCES", "RPS", "ERRORS %", "P50", "P99"):
        services.add_column(name, justify="left" if name == "SERVICE" else "right")
    for s in body.get("services", []):
        services.add_row(Text(clean(s["service"])), f"{s['scraped']}/{s['instances']}",
                         _rate(s["rps"]), _pct(s["error_rate"]), _ms(s["p50"]),
                         _ms(s["p99"]))
    edges = Table(box=None)
    for name in ("SOURCE", "DESTINATION", "RPS", "ERRORS %", "P99"):
        edges.add_column(name, justify="left" if name in ("SOURCE", "DESTINATION")
                         else "right")
    for e in body.get("edges", []):
        edges.add_row(Text(clean(e["source"])), Text(clean(e["destination"])),
                      _rate(e["rps"]), _pct(e["error_rate"]), _ms(e["p99"]))
    parts: list[Any] = [services, Text(""), edges]
    if body.get("unreachable"):
        parts.append(Text("unreachable: " + clean(", ".join(body["unreachable"]))))
    return Group(*parts)


def _title(body: dict[str, Any]) -> str:
    window = body.get("window")
    return "waiting for a second scrape..." if window is None else \
        f"over the last {window:.1f}s"


def _rate(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{value * 100:.1f}"


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value * 1000:.1f}ms"

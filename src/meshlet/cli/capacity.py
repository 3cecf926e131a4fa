"""`meshlet capacity SERVICE`: sample a service's sidecars, show its load and what it needs.

The math is in ``deploy/capacity.py``, the scraping in ``observe/scraper.py``; this
module parses, calls them and renders (docs/capacity.md explains the output).
"""

from __future__ import annotations

import asyncio
import math
from pathlib import Path

import click

from meshlet.cli.context import Context, pass_ctx
from meshlet.cli.render import echo, emit_json, table
from meshlet.deploy.capacity import Plan, Replica, plan
from meshlet.errors import ConfigError, NotFound
from meshlet.observe.samples import CPU_NOT_MEASURED
from meshlet.observe.scraper import Sampled, Target, sample


class Number(click.ParamType):
    """A number in a range; a bad one is a one-line ConfigError naming the option
    (click's own range types print their usage block around it)."""

    name = "number"

    def __init__(self, kind: type[float] | type[int], low: float, high: float | None = None,
                 low_open: bool = False) -> None:
        self.kind = kind
        self.low, self.high, self.low_open = low, high, low_open

    def convert(self, value: object, param: click.Parameter | None,
                ctx: click.Context | None) -> float | int:
        option = param.opts[0] if param is not None and param.opts else "value"
        rule = (f"more than {self.low:g}" if self.low_open else f"at least {self.low:g}") + \
            (f" and at most {self.high:g}" if self.high is not None else "")
        what = "a whole number" if self.kind is int else "a number"
        try:
            number = self.kind(str(value))
        except ValueError:
            raise ConfigError(f"{option}: {value!r} is not {what}", option.lstrip("-")) \
                from None
        if not math.isfinite(number):
            raise ConfigError(f"{option}: must be a finite number (got {value})",
                              option.lstrip("-"))
        if not (number > self.low if self.low_open else number >= self.low) or \
                (self.high is not None and number > self.high):
            raise ConfigError(f"{option}: must be {rule} (got {value})", option.lstrip("-"))
        return number


POSITIVE = Number(float, 0, low_open=True)


@click.command()
@click.argument("service")
@click.option("--target-rps", type=Number(float, 0), default=None, metavar="R",
              help="The request rate to plan for (default: the measured throughput).")
@click.option("--utilization", "utilization", type=Number(float, 0, 1, low_open=True),
              default=0.7, show_default=True, metavar="U",
              help="The utilisation each replica should run at (0 < U <= 1).")
@click.option("--concurrency", type=Number(int, 1), default=1, show_default=True,
              metavar="C", help="Requests one replica serves at once (capacity = C / W).")
@click.option("--seconds", type=POSITIVE, default=10.0, show_default=True, metavar="S",
              help="Sample for this long (Ctrl-C ends it early and reports).")
@click.option("--interval", type=POSITIVE, default=1.0, show_default=True, metavar="I",
              help="Scrape every sidecar this often.")
@click.option("--plot", type=click.Path(dir_okay=False, path_type=Path), default=None,
              metavar="FILE.png", help="Draw rate and p95 latency over time per replica.")
@pass_ctx
def capacity(ctx: Context, service: str, target_rps: float | None, utilization: float,
             concurrency: int, seconds: float, interval: float, plot: Path | None) -> None:
    """Measure SERVICE's throughput, latency and load from its sidecars, and the
    replicas a target request rate needs."""
    if interval > seconds:
        raise ConfigError(f"--interval ({interval:g}s) is longer than --seconds "
                          f"({seconds:g}s)", "interval")
    if plot is not None and plot.suffix.lower() != ".png":
        raise ConfigError(f"--plot {plot}: the plot is a PNG: name it FILE.png", "plot")
    if plot is not None and not plot.absolute().parent.is_dir():
        raise ConfigError(f"--plot {plot}: no directory {plot.absolute().parent}", "plot")
    targets = _targets(ctx, service)

    def started(sampled: Sampled) -> None:
        click.echo(f"sampling {len(sampled.scrapes)} of {len(targets)} instances of "
                   f"{service} every {interval:g}s for {seconds:g}s (Ctrl-C stops early)",
                   err=True)
    sampled = asyncio.run(sample(targets, service, seconds, interval, started))
    for failure in sampled.failures.values():
        click.echo(f"meshlet: warning: {failure}", err=True)
    if sampled.seconds <= 0:
        raise ConfigError("sampling stopped before a second scrape: nothing measured")
    nodes = {t.instance: t.node for t in targets}
    result = plan(service, [Replica(i, nodes[i], tuple(s)) for i, s in
                            sampled.scrapes.items()], sampled.seconds, sampled.rounds[0],
                  target_rps, utilization, concurrency)
    if plot is not None:
        from meshlet.observe.plot import write_png
        write_png(plot, f"{service}: {len(result.replicas)} replicas",
                  {r.instance: r.series for r in result.replicas})
    if ctx.json:
        emit_json(result.to_dict() | ({"plot": str(plot)} if plot else {}))
        return
    render(result, interval)
    if plot is not None:
        echo(f"plot: {plot}")


def _targets(ctx: Context, service: str) -> list[Target]:
    instances, _ = ctx.call(lambda c: c.instances(service))
    if not instances:
        raise NotFound(f"service {service!r} has no instances")
    targets = [Target(str(i["id"]), str(i.get("node", "")), str(i["meta"]["metrics"]))
               for i in instances if (i.get("meta") or {}).get("metrics")]
    if not targets:
        raise NotFound(f"no instance of {service!r} has a sidecar that exports metrics "
                       "(meta.metrics)")
    return targets


def render(result: Plan, interval: float) -> None:
    echo(f"{result.service}: {_count(len(result.replicas), 'replica')} on "
         f"{_count(len(result.nodes), 'node')}, sampled every {interval:g}s for "
         f"{result.seconds:.3f}s")
    rate = result.total.error_rate
    rows: list[tuple[str, str, str]] = [
        ("requests", "inbound requests completed, all replicas",
         f"{result.total.requests:.0f} (5xx: {result.total.errors:.0f}"
         + (f" = {rate:.2%})" if rate is not None else ")")),
    ]
    labels = {"throughput": "throughput", "p50": "latency p50", "p95": "latency p95",
              "p99": "latency p99", "mean_latency": "mean latency",
              "load_per_replica": "load per replica", "load_per_node": "load per node",
              "in_flight": "in flight (Little)", "capacity_per_replica": "capacity/replica",
              "utilization": "utilisation", "replicas_needed": "replicas needed"}
    for f in result.formulas:
        if f.name == "replicas_needed":
            rows.append(("cpu", CPU_NOT_MEASURED, ""))
            target = "the measured throughput" if result.target_from_measure else "--target-rps"
            rows.append(("target", f"{result.target_rps:.2f} req/s ({target}) at "
                         f"{result.utilization_target:.0%} utilisation", ""))
        rows.append((labels[f.name], f.formula, f.text))
    table(rows, ["MEASURE", "FORMULA", "VALUE"])
    echo()
    table([(r.instance, r.node or "-", f"{r.window.requests:.0f}", f"{r.rate:.2f}",
            f"{r.peak_rate:.2f}", _ms(r.window.quantile(0.5)), _ms(r.window.quantile(0.95)),
            _ms(r.window.quantile(0.99)), f"{r.window.errors:.0f}")
           for r in result.replicas],
          ["INSTANCE", "NODE", "REQUESTS", "REQ/S", "PEAK REQ/S", "P50", "P95", "P99",
           "ERRORS"])
    echo()
    table([(node or "-", sum(1 for r in result.replicas if r.node == node), f"{load:.2f}")
           for node, load in sorted(result.nodes.items())], ["NODE", "REPLICAS", "REQ/S"])


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}{'' if n == 1 else 's'}"


def _ms(seconds: float | None) -> str:
    return "-" if seconds is None else f"{seconds * 1000:.2f} ms"

"""``meshlet capacity --plot``: request rate and p95 latency over time, per replica.

Drawn with matplotlib's Agg canvas directly (no pyplot: no global figure state, no
display needed). matplotlib takes a second to import, so import this module only
when a plot is asked for.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from meshlet.observe.samples import Point


def write_png(path: Path, title: str, series: Mapping[str, Sequence[Point]]) -> None:
    """Write the two panels (rate above, p95 below; one line per replica) to ``path``.

    Raises OSError when ``path`` cannot be written.
    """
    figure = Figure(figsize=(9, 6), layout="constrained")
    FigureCanvasAgg(figure)
    rate, latency = figure.subplots(2, 1, sharex=True)
    for name, points in sorted(series.items()):
        times = [p.time for p in points]
        rate.plot(times, [p.rate for p in points], marker=".", label=name)
        # An interval without requests has no latency: a gap in the line.
        latency.plot(times, [float("nan") if p.p95 is None else p.p95 * 1000
                             for p in points], marker=".", label=name)
    rate.set_title(title)
    rate.set_ylabel("requests / s")
    latency.set_ylabel("p95 latency (ms)")
    latency.set_xlabel("seconds since the first scrape")
    for axes in (rate, latency):
        axes.grid(True, alpha=0.3)
        axes.set_ylim(bottom=0)
    if series:
        rate.legend(loc="best", fontsize="small")
    figure.savefig(path, format="png", dpi=100)

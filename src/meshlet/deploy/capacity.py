"""Capacity planning from what a service's sidecars measured; pure.

``plan(service, replicas, seconds, ...)`` takes every replica's scrapes (see
:mod:`meshlet.observe.samples`) and returns a :class:`Plan`: the measures and, beside
each, the formula that gave it with its numbers filled in, so a user can check them.

The formulas (λ: throughput, W: mean time in a replica, n: replicas, m: nodes):

- throughput            λ = requests / time (every replica's requests over the sampling time)
- load per replica      λ / n;  load per node  λ / m
- in flight             L = λ × W  (Little's law)
- capacity per replica  μ = C / W: a replica that serves C requests at once, each in W,
                        completes C / W a second (Little's law at saturation). C is the
                        replica's concurrency (``--concurrency``, default 1: one request
                        at a time). W is measured at the present load, so queueing in
                        the replica already lowers μ: the estimate errs low.
- utilisation           ρ = (λ / n) / μ  (equals L / (n × C))
- replicas needed       ceil(target / (μ × U)) for a target rate at utilisation U

The peak rate a replica was seen to serve (over one scrape interval) is reported too: a
measured lower bound of its capacity.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from meshlet.observe.samples import CPU_NOT_MEASURED, Point, Scrape, Window, merge, series, window

NO_REQUESTS = "not measured (no requests in the window)"
_DIGITS = 9  # ceil() without float noise (see deploy/autoscaler.py)


@dataclass(frozen=True)
class Replica:
    """One instance's scrapes, in any order."""

    instance: str
    node: str
    scrapes: tuple[Scrape, ...]


@dataclass(frozen=True)
class ReplicaLoad:
    instance: str
    node: str
    window: Window
    rate: float            # requests / sampling time
    peak_rate: float       # the highest rate over one interval
    series: tuple[Point, ...]


@dataclass(frozen=True)
class Formula:
    """A measure, how it is computed, and the computation with the numbers."""

    name: str
    formula: str
    value: float | None
    text: str


@dataclass(frozen=True)
class Plan:
    service: str
    seconds: float
    replicas: tuple[ReplicaLoad, ...]
    total: Window
    concurrency: int
    target_rps: float
    target_from_measure: bool
    utilization_target: float
    formulas: tuple[Formula, ...]

    def value(self, name: str) -> float | None:
        return next(f.value for f in self.formulas if f.name == name)

    @property
    def nodes(self) -> dict[str, float]:
        """Each node's load: the rates of its replicas added."""
        load: dict[str, float] = {}
        for r in self.replicas:
            load[r.node] = load.get(r.node, 0.0) + r.rate
        return load

    def to_dict(self) -> dict[str, object]:
        return {
            "service": self.service, "seconds": self.seconds,
            "requests": self.total.requests, "errors": self.total.errors,
            "error_rate": self.total.error_rate, "concurrency": self.concurrency,
            "target_rps": self.target_rps, "target_from_measure": self.target_from_measure,
            "utilization_target": self.utilization_target, "cpu": CPU_NOT_MEASURED,
            "measures": {f.name: {"value": f.value, "formula": f.formula, "text": f.text}
                         for f in self.formulas},
            "nodes": self.nodes,
            "replicas": [{"instance": r.instance, "node": r.node,
                          "requests": r.window.requests, "errors": r.window.errors,
                          "rate": r.rate, "peak_rate": r.peak_rate,
                          "p50": r.window.quantile(0.5), "p95": r.window.quantile(0.95),
                          "p99": r.window.quantile(0.99),
                          "series": [{"time": p.time, "rate": p.rate, "p95": p.p95}
                                     for p in r.series]}
                         for r in self.replicas],
        }


def replica_load(replica: Replica, seconds: float, origin: float) -> ReplicaLoad | None:
    """A replica's load over the sampling time; None with fewer than two scrapes."""
    ordered = sorted(replica.scrapes, key=lambda s: s.time)
    if len(ordered) < 2:
        return None
    whole = window(ordered[0], ordered[-1])
    points = series(ordered, origin)
    return ReplicaLoad(replica.instance, replica.node, whole,
                       whole.requests / seconds if seconds > 0 else 0.0,
                       max(p.rate for p in points), points)


def plan(service: str, replicas: Sequence[Replica], seconds: float, origin: float = 0.0,
         target_rps: float | None = None, utilization: float = 0.7,
         concurrency: int = 1) -> Plan:
    """The service's measures and the replicas a target rate needs (module doc).

    ``seconds``: the sampling time (first scrape to last); ``origin``: the time of the
    first scrape, where the series start. ``target_rps`` None: the measured throughput.
    A replica seen in fewer than two scrapes measured nothing and is left out.
    """
    assert seconds > 0 and 0 < utilization <= 1 and concurrency >= 1
    loads = tuple(load for r in replicas
                  if (load := replica_load(r, seconds, origin)) is not None)
    total = merge(r.window for r in loads)
    n, m = len(loads), len({r.node for r in loads})
    lam = total.requests / seconds
    target = lam if target_rps is None else target_rps
    formulas = (*_measures(total, seconds, n, m),
                *_planning(lam, total.mean_latency, n, concurrency, target, utilization))
    return Plan(service, seconds, loads, total, concurrency, target, target_rps is None,
                utilization, formulas)


def _measures(total: Window, seconds: float, n: int, m: int) -> list[Formula]:
    lam = total.requests / seconds
    w = total.mean_latency
    found = [Formula("throughput", "λ = requests / time", lam,
                     f"λ = {total.requests:.0f} / {seconds:.3f} s = {lam:.2f} req/s")]
    for q in (0.5, 0.95, 0.99):
        value = total.quantile(q)
        found.append(Formula(f"p{round(q * 100)}", f"histogram_quantile({q}, Σ bucket deltas)",
                             value, _ms(value) if value is not None else NO_REQUESTS))
    found.append(Formula(
        "mean_latency", "W = latency sum / count", w,
        f"W = {total.latency_sum:.6f} s / {total.latency_count:.0f} = {_ms(w)}"
        if w is not None else NO_REQUESTS))
    found.append(Formula("load_per_replica", "λ / replicas", lam / n if n else None,
                         f"{lam:.2f} / {n} = {lam / n:.2f} req/s" if n else "no replica"))
    found.append(Formula("load_per_node", "λ / nodes", lam / m if m else None,
                         f"{lam:.2f} / {m} = {lam / m:.2f} req/s" if m else "no node"))
    return found


def _planning(lam: float, w: float | None, n: int, concurrency: int, target: float,
              utilization: float) -> list[Formula]:
    names = (("in_flight", "L = λ × W"), ("capacity_per_replica", "μ = concurrency / W"),
             ("utilization", "ρ = (λ / replicas) / μ"),
             ("replicas_needed", "ceil(target / (μ × U))"))
    if w is None or not n:
        return [Formula(name, formula, None, NO_REQUESTS) for name, formula in names]
    mu = concurrency / w
    rho = (lam / n) / mu
    needed = math.ceil(round(target / (mu * utilization), _DIGITS))
    needed = max(needed, 1) if target > 0 else 0  # any load needs a replica
    texts = (
        (lam * w, f"L = {lam:.2f} req/s × {w:.6f} s = {lam * w:.3f} requests"),
        (mu, f"μ = {concurrency} / {w:.6f} s = {mu:.1f} req/s"),
        (rho, f"ρ = ({lam:.2f} / {n}) / {mu:.1f} = {rho:.2%}"),
        (float(needed), f"ceil({target:.2f} / ({mu:.1f} × {utilization:.2f})) = {needed}"),
    )
    return [Formula(name, formula, value, text)
            for (name, formula), (value, text) in zip(names, texts, strict=True)]


def _ms(seconds: float | None) -> str:
    return "-" if seconds is None else f"{seconds * 1000:.2f} ms"

"""Cost of one pick per load-balancing policy, with 10, 100 and 1000 endpoints.

Each policy is reset once with the endpoints, then picked in a tight loop (with a
fresh hash key per pick for the hash policies, and the driver's start/finish calls
for the load-aware ones, since those are part of what a pick costs in the sidecar).
Measures; never fails. Usage: python bench/lb_pick.py [--picks N]
"""

from __future__ import annotations

import argparse
import random
import time

from meshlet.proxy.config import Endpoint
from meshlet.proxy.lb import POLICY_NAMES, EndpointState, PickContext, make_balancer


def states(n: int) -> list[EndpointState]:
    rng = random.Random(n)
    return [EndpointState(Endpoint(f"e{i}", "10.0.0.1", 1000 + i, weight=rng.randint(1, 5),
                                   zone="a" if i % 3 else "b")) for i in range(n)]


def measure(name: str, n: int, picks: int) -> tuple[float, float]:
    eps = states(n)
    policy = make_balancer(name, {}, zone="a")
    started = time.perf_counter()
    policy.reset(eps)
    reset_ms = (time.perf_counter() - started) * 1000
    ctx = PickContext(random.Random(1), 0.0)
    keys = [f"user-{i}".encode() for i in range(1024)]
    started = time.perf_counter()
    for i in range(picks):
        ctx.now = i * 1e-4
        ctx.hash_key = keys[i & 1023]
        chosen = policy.pick(ctx)
        chosen.start()  # type: ignore[union-attr]
        chosen.finish(0.002, ctx.now)  # type: ignore[union-attr]
    per_pick_us = (time.perf_counter() - started) / picks * 1e6
    return per_pick_us, reset_ms


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--picks", type=int, default=100_000)
    args = parser.parse_args()
    sizes = (10, 100, 1000)
    print("| policy | " + " | ".join(f"µs/pick @{n}" for n in sizes) + " | "
          + " | ".join(f"reset ms @{n}" for n in sizes) + " |")
    print("|---|" + "---|" * (2 * len(sizes)))
    for name in POLICY_NAMES:
        results = [measure(name, n, args.picks) for n in sizes]
        print(f"| {name} | " + " | ".join(f"{p:.2f}" for p, _ in results) + " | "
              + " | ".join(f"{r:.1f}" for _, r in results) + " |")


if __name__ == "__main__":
    main()

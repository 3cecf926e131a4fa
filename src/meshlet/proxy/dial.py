"""A connection of its own to one of a target's endpoints, for what cannot use the
pool (TCP relays, upgraded HTTP connections): the balancer picks, and a failed connect
is tried again on another endpoint, as nothing has been sent yet."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from meshlet.proxy.lb import EndpointState


async def dial_endpoint(listener: Any, target: Any, tried: list[EndpointState],
                        protocol: Callable[[], Any]) -> tuple[Any, EndpointState | None, str]:
    """Connect a new ``protocol()`` to an endpoint of ``target`` not in ``tried`` (each
    attempt is appended): the connected protocol and its endpoint, or (None, None, why
    not). Failed connects are counted and fed to outlier detection."""
    cluster = listener.cluster
    reason = "no_healthy_endpoint"
    while len(tried) <= cluster.retries:
        state = cluster.pick(target, tried)
        if state is None:
            break
        tried.append(state)
        conn = protocol()
        failure = await listener.connector.dial(conn, state.endpoint, cluster.connect_timeout)
        if not failure:
            cluster.record_outcome(state, False)
            return conn, state, ""
        reason = failure
        listener.count(listener.metrics.connect_errors, reason)
        if cluster.record_outcome(state, True):
            listener.count_ejection()
    return None, None, reason

"""A follower gives a forwarded blocking query as long as the leader may hold it
(its ``wait``), plus the usual 30 s: a watch of 30 s forwarded with a 30 s budget
failed every time the service stayed unchanged."""

from __future__ import annotations

from aiohttp.test_utils import make_mocked_request

from meshlet.api.routes import DEFAULT_WAIT, MAX_WAIT, blocking_wait


def test_the_wait_of_a_blocking_query_is_its_budget() -> None:
    def wait(query: str) -> float:
        return blocking_wait(make_mocked_request("GET", f"/v1/services/web/instances{query}"))
    assert wait("?index=3&wait=30s") == 30.0
    assert wait("?index=3") == DEFAULT_WAIT
    assert wait("?index=3&wait=1h") == MAX_WAIT
    assert wait("?wait=30s") == 0.0  # no index: nothing blocks
    assert wait("?index=3&wait=soon") == 0.0  # refused by the leader at once

"""Which raw requests the server's fast lane takes as plain watches of a service's
instances, and what it reads from them."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from meshlet.api.watch_request import INCOMPLETE, WatchGet, parse


def watch(target: str = "/v1/services/web/instances?index=7&wait=30.0s",
          headers: str = "Host: x\r\n", version: str = "HTTP/1.1") -> bytes:
    return f"GET {target} {version}\r\n{headers}\r\n".encode()


def test_a_plain_watch_gives_service_index_and_wait() -> None:
    raw = watch()
    assert parse(raw) == WatchGet("web", 7, 30.0, False, len(raw), True)
    assert parse(watch("/v1/services/web/instances?passing=1&index=0")) == WatchGet(
        "web", 0, 300.0, True, len(watch("/v1/services/web/instances?passing=1&index=0")),
        True)


def test_passing_wait_token_and_close_are_read() -> None:
    for flag in ("passing", "passing=1", "passing=true"):
        request = parse(watch(f"/v1/services/a.b-c_d/instances?index=1&{flag}"))
        assert isinstance(request, WatchGet) and request.passing and request.service == "a.b-c_d"
    request = parse(watch(headers="X-Meshlet-Token: s3cret\r\nConnection: close\r\n"))
    assert isinstance(request, WatchGet)
    assert request.token == "s3cret" and not request.keep_alive
    assert parse(watch("/v1/services/w/instances?index=1&wait=2m")).wait == 120.0  # type: ignore[union-attr]
    assert parse(watch("/v1/services/w/instances?index=1&wait=1h")).wait == 600.0  # type: ignore[union-attr]


def test_pipelined_watches_end_where_the_first_does() -> None:
    first, second = watch(), watch("/v1/services/db/instances?index=9")
    request = parse(first + second)
    assert isinstance(request, WatchGet) and request.end == len(first)
    assert parse((first + second)[request.end:]) == parse(second)


@given(st.sampled_from(["", "&passing", "&wait=5s"]))
def test_every_prefix_of_a_watch_is_incomplete(extra: str) -> None:
    raw = watch("/v1/services/web/instances?index=3" + extra)
    for cut in range(len(raw)):
        assert parse(raw[:cut]) is INCOMPLETE, raw[:cut]
    assert isinstance(parse(raw), WatchGet)
    assert parse(bytearray(raw)) == parse(raw)  # the fast lane's buffer is a bytearray


def test_anything_else_goes_to_aiohttp() -> None:
    others = [
        watch("/v1/services/web/instances"),  # no index: nothing blocks
        watch("/v1/services/web/instances?wait=5s"),
        watch("/v1/services/web/instances?index="),
        watch("/v1/services/web/instances?index=-1"), watch("/v1/services/web/instances?index=+1"),
        watch("/v1/services/web/instances?index=" + "9" * 21),
        watch("/v1/services/web/instances?index=1&index=2"),
        watch("/v1/services/web/instances?index=1&wait=5s&wait=6s"),
        watch("/v1/services/web/instances?index=1&wait="),
        watch("/v1/services/web/instances?index=1&wait=forever"),
        watch("/v1/services/web/instances?index=1&wait=1e400s"),
        watch("/v1/services/web/instances?index=1&passing=0"),
        watch("/v1/services/web/instances?index=1&passing=false"),
        watch("/v1/services/web/instances?index=1&stale"),
        watch("/v1/services/web/instances?index=1&consistency=consistent"),
        watch("/v1/services/web/instances?index=1&"),
        watch("/v1/services/we%62/instances?index=1"), watch("/v1/services/we b/instances?index=1"),
        watch("/v1/services//instances?index=1"), watch("/v1/services/a/b/instances?index=1"),
        watch("/v1/services/.web/instances?index=1"),
        watch("/v1/services/" + "a" * 129 + "/instances?index=1"),
        watch("/v1/services/web/instancesx?index=1"),
        watch("/v1/services?index=1"),
        watch(version="HTTP/1.0"),
        watch(headers="Content-Length: 3\r\n") + b"abc",
        watch(headers="Transfer-Encoding: chunked\r\n"),
        watch(headers="X-Meshlet-Token: a\r\nX-Meshlet-Token: b\r\n"),
        b"PUT /v1/services/web/instances?index=1 HTTP/1.1\r\n\r\n",
        b"HEAD /v1/services/web/instances?index=1 HTTP/1.1\r\n\r\n",
    ]
    for raw in others:
        assert parse(raw) is None, raw


def test_an_empty_body_is_still_plain() -> None:
    assert isinstance(parse(watch(headers="Content-Length: 0\r\n")), WatchGet)

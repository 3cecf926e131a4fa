"""Hardened inputs on a real server: a header value holding CRLF, an infinite or
unbounded number, JSON nested 10,000 deep or larger than 1 MiB, a loopback network, a
multicast node address: each gets a 400 naming the field and changes nothing, not
even the index (nothing reaches the log)."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import pytest

from meshlet.api.client import Client
from meshlet.errors import ConfigError
from meshlet.server.main import Server


def state(server: Server) -> Any:
    """Everything the state machine holds, its index included."""
    return json.loads(server.node.machine.snapshot())


DEEP = b"[" * 10_000 + b"]" * 10_000
DEEP_OBJECT = b'{"a":' * 10_000 + b"1" + b"}" * 10_000
SMUGGLED = {"x-user": "alice\r\n\r\nGET /admin HTTP/1.1\r\nHost: app"}
BIG = json.dumps({"routes": [{"match": {"headers": {"x": "y" * 4096}}}] * 300}).encode()


@pytest.mark.parametrize("method, path, body, field, message", [
    ("PUT", "/v1/config/web", {"routes": [{"request_headers": {"set": SMUGGLED}}]},
     "routes.0.request_headers.set", "CR, LF, NUL"),
    ("PUT", "/v1/config/web", {"routes": [{"request_headers": {"set": {"x y": "1"}}}]},
     "routes.0.request_headers.set", "not a header name"),
    ("PUT", "/v1/config/web", {"routes": [{"request_headers": {"remove": ["a\nb"]}}]},
     "routes.0.request_headers.remove", "not a header name"),
    ("PUT", "/v1/config/web", {"routes": [{"match": {"headers": {"x": "\x00"}}}]},
     "routes.0.match.headers", "CR, LF, NUL"),
    ("PUT", "/v1/config/web", {"routes": [{"request_headers": {"set": {"x": "\ud800"}}}]},
     "routes.0.request_headers.set", "visible Latin-1"),
    ("PUT", "/v1/config/web", b'{"request_timeout": Infinity}', "body",
     "Infinity is not a JSON number"),
    ("PUT", "/v1/config/web", b'{"rate_limit_rps": NaN}', "body", "NaN is not a JSON number"),
    ("PUT", "/v1/config/web", b'{"connect_timeout": 1e400}', "body", "out of a number's range"),
    ("PUT", "/v1/config/web", {"request_timeout": "25h"}, "request_timeout", "86400"),
    ("PUT", "/v1/config/web", {"request_timeout": "9" * 400}, "request_timeout", "finite"),
    ("PUT", "/v1/config/web", {"max_connections": 2_000_000}, "max_connections", "1000000"),
    ("PUT", "/v1/config/web", {"rate_limit_rps": 1e7}, "rate_limit_rps", "1000000"),
    ("PUT", "/v1/config/web", {"routes": [{}] * 257}, "routes", "at most 256 routes"),
    ("PUT", "/v1/config/web", DEEP, "body", "more than 32 deep"),
    ("PUT", "/v1/config/web", DEEP_OBJECT, "body", "more than 32 deep"),
    ("PUT", "/v1/config/web", BIG, "body", "at most 1048576"),
    ("PUT", "/v1/catalog/register", DEEP, "body", "more than 32 deep"),
    ("POST", "/v1/networks", DEEP, "body", "more than 32 deep"),
    ("PUT", "/v1/nodes/h1", DEEP_OBJECT, "body", "more than 32 deep"),
    ("POST", "/v1/networks", {"name": "n", "subnet": "127.0.0.0/24"}, "subnet", "loopback"),
    ("POST", "/v1/networks", {"name": "n", "subnet": "169.254.0.0/24"}, "subnet",
     "link-local"),
    ("POST", "/v1/networks", {"name": "n", "subnet": "224.1.0.0/16"}, "subnet", "multicast"),
    ("POST", "/v1/networks", {"name": "n", "subnet": "0.0.0.0/8"}, "subnet", "unspecified"),
    ("POST", "/v1/networks", {"name": "n", "subnet": "240.0.0.0/24"}, "subnet", "reserved"),
    ("POST", "/v1/networks", {"name": "n", "subnet": "10.0.0.0/7"}, "subnet", "/8"),
    ("POST", "/v1/networks", {"name": "n", "subnet": "96.0.0.0/3"}, "subnet", "/8"),
    ("PUT", "/v1/vips/cidr", {"cidr": "127.96.0.0/16"}, "cidr", "loopback"),
    ("PUT", "/v1/vips/cidr", {"cidr": "0.0.0.0/0"}, "cidr", "/8"),
    ("PUT", "/v1/nodes/h1", {"address": "224.0.0.5"}, "address", "multicast"),
    ("PUT", "/v1/nodes/h1", {"address": "169.254.10.1"}, "address", "link-local"),
    ("PUT", "/v1/nodes/h1", {"address": "255.255.255.255"}, "address", "broadcast"),
    ("PUT", "/v1/nodes/h1", {"address": "0.0.0.0"}, "address", "unspecified"),
    ("PUT", "/v1/nodes/h1", {"address": "0.1.2.3"}, "address", "unspecified"),
    ("PUT", "/v1/config/web%0A", {"retries": 1}, "service", "not a valid"),
    ("POST", "/v1/networks", {"name": "front2\n"}, "name", "not a valid network name"),
    ("PUT", "/v1/nodes/h1%0A", {"address": "10.0.0.1"}, "name", "not a valid node name"),
], ids=lambda v: v[:40] if isinstance(v, str) else None)
async def test_bad_input_gets_400_naming_the_field_and_changes_nothing(
        server: Server, http: Any, method: str, path: str, body: Any, field: str,
        message: str) -> None:
    async with Client(server.url, token=server.acl.token()) as c:
        await c.config_set("web", {"retries": 1})
        await c.network_create("front", subnet="10.60.0.0/24")
    before = state(server)
    kwargs = {"data": body} if isinstance(body, bytes) else {"json": body}
    async with http.request(method, path, **kwargs) as resp:
        assert resp.status == 400, await resp.text()
        payload = await resp.json()
    assert payload["error"]["code"] == "invalid"
    assert payload["error"]["field"] == field
    assert message in payload["error"]["message"]
    assert "Traceback" not in payload["error"]["message"]
    assert state(server) == before


async def test_a_body_declared_larger_than_1_mib_is_refused_unread(
        server: Server, http: Any) -> None:
    before = state(server)
    async def chunks() -> AsyncIterator[bytes]:
        for _ in range(3):
            yield b" " * (512 * 1024)
    async with http.put("/v1/config/web", data=chunks(),
                        headers={"Content-Length": str(3 * 512 * 1024)}) as resp:
        assert resp.status == 400
        assert (await resp.json())["error"]["field"] == "body"
    assert state(server) == before


async def test_good_bounded_settings_are_kept(server: Server) -> None:
    async with Client(server.url, token=server.acl.token()) as c:
        body = await c.config_set("web", {
            "request_timeout": "24h", "max_connections": 1_000_000,
            "routes": [{"request_headers": {"set": {"X-Forwarded-Proto": "https",
                                                    "x-tab": "a\tb"}}}]})
    assert body["settings"]["request_timeout"] == 86400.0
    assert body["settings"]["routes"][0]["request_headers"]["set"]["x-tab"] == "a\tb"


async def test_loopback_nodes_only_among_loopback_nodes(server: Server) -> None:
    """One host's cluster (``meshlet up``) registers 127.0.0.1; a node other hosts can
    reach cannot join it, nor the other way round, and nothing changes."""
    async with Client(server.url, token=server.acl.token()) as c:
        await c.node_register("local", "127.0.0.1")
        await c.node_register("local", "127.0.0.1")  # the heartbeat
        await c.node_register("local-2", "127.0.0.2")
        before = state(server)
        with pytest.raises(ConfigError, match=r"cannot join node 'local' at 127\.0\.0\.1"):
            await c.node_register("h1", "10.0.0.1")
        assert state(server) == before
        await c.node_deregister("local")
        await c.node_deregister("local-2")
        await c.node_register("h1", "10.0.0.1")
        before = state(server)
        with pytest.raises(ConfigError, match="--advertise"):
            await c.node_register("local", "127.0.0.1")
        assert state(server) == before
        # A lone node may move between the two: no other node is left behind.
        await c.node_register("h1", "127.0.0.1")
        assert [n["address"] for n in (await c.nodes())[0]] == ["127.0.0.1"]

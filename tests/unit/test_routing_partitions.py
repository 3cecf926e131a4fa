"""Routes, traffic splits and partitions: pure decisions on request views."""

from __future__ import annotations

import random
from collections import Counter
from typing import Any

import pytest

from meshlet.errors import ConfigError
from meshlet.proxy.partition import PartitionRule, Refusal
from meshlet.proxy.request_view import RequestView
from meshlet.proxy.routing import RouteTable
from meshlet.state.config_entry import parsed, validate_settings


def view(path: str = "/", method: str = "GET", **headers: str) -> RequestView:
    return RequestView(method, path, {k.replace("_", "-"): v for k, v in headers.items()},
                       "10.1.2.3")


def rule(**partition: Any) -> PartitionRule:
    settings = parsed(validate_settings({"partition": partition}))
    assert settings.partition is not None
    return PartitionRule("accounts", settings.partition)


TENANTS = {"key": "header:x-tenant", "strategy": "range", "ranges": [
    {"from": "a", "to": "f", "shard": "s1"}, {"from": "g", "to": "p", "shard": "s2"},
    {"from": "q", "to": "z", "shard": "s3"}]}


@pytest.mark.parametrize("tenant, shard", [
    ("a", "s1"), ("acme", "s1"), ("f", "s1"), ("fzzz", "s1"), ("g", "s2"), ("globex", "s2"),
    ("p", "s2"), ("pz", "s2"), ("q", "s3"), ("zeta", "s3"), ("z", "s3"), ("zzz", "s3"),
])
def test_string_range_boundaries(tenant: str, shard: str) -> None:
    assert rule(**TENANTS).shard_for(view(x_tenant=tenant), random.Random()) == shard


@pytest.mark.parametrize("tenant", ["A", "0day", "~tilde", ""])
def test_key_outside_every_range_is_refused_naming_the_rule(tenant: str) -> None:
    refused = rule(**TENANTS).shard_for(view(x_tenant=tenant), random.Random())
    assert isinstance(refused, Refusal) and refused.status == 400
    assert refused.reason == "partition_no_match"
    assert "range partition of accounts on header:x-tenant" in refused.message


def test_missing_key_refused_or_default_shard() -> None:
    refused = rule(**TENANTS).shard_for(view(), random.Random())
    assert isinstance(refused, Refusal) and refused.reason == "partition_key_missing"
    with_default = rule(**TENANTS, default_shard="s1")
    assert with_default.shard_for(view(), random.Random()) == "s1"
    assert with_default.shard_for(view(x_tenant="0"), random.Random()) == "s1"


def test_numeric_ranges() -> None:
    r = rule(key="path:1", strategy="range", numeric=True, ranges=[
        {"from": 0, "to": 999, "shard": "low"}, {"from": 1000, "to": 1e9, "shard": "high"}])
    assert r.shard_for(view("/users/999"), random.Random()) == "low"
    assert r.shard_for(view("/users/1000"), random.Random()) == "high"
    assert r.shard_for(view("/users/999.5"), random.Random()).reason == "partition_no_match"  # type: ignore[union-attr]
    assert isinstance(r.shard_for(view("/users/abc"), random.Random()), Refusal)
    assert isinstance(r.shard_for(view("/users"), random.Random()), Refusal)


@pytest.mark.parametrize("ranges, message", [
    ([{"from": "g", "to": "a", "shard": "x"}], "partition.ranges.0: empty range"),
    ([{"from": 5, "to": 1, "shard": "x"}], "partition.ranges.0: empty range"),
    ([{"from": "a", "to": "f", "shard": "x"}, {"from": "f", "to": "k", "shard": "y"}],
     "partition.ranges.1: from 'f' overlaps"),
    ([{"from": "m", "to": "p", "shard": "x"}, {"from": "a", "to": "c", "shard": "y"}],
     "partition.ranges.1: from 'a' overlaps or comes before"),
    ([], "partition: strategy range needs at least one range"),
])
def test_invalid_ranges_rejected_with_field(ranges: list[Any], message: str) -> None:
    numeric = all(isinstance(r["from"], int) for r in ranges) and bool(ranges)
    with pytest.raises(ConfigError) as info:
        validate_settings({"partition": {"key": "header:t", "strategy": "range",
                                         "numeric": numeric, "ranges": ranges}})
    assert str(info.value).startswith(message)


def test_unknown_strategy_and_bad_key_source() -> None:
    with pytest.raises(ConfigError, match=r"partition\.strategy: Input should be"):
        validate_settings({"partition": {"key": "header:t", "strategy": "roulette"}})
    with pytest.raises(ConfigError, match=r"partition\.key: expected header:NAME"):
        validate_settings({"partition": {"key": "body", "strategy": "hash", "shards": 2}})


def test_hash_partitions_are_stable_and_spread() -> None:
    for mode in ("consistent", "modulo"):
        r = rule(key="header:x-user", strategy="hash", shards=4, hash=mode)
        shards = [r.shard_for(view(x_user=f"u{i}"), random.Random()) for i in range(4000)]
        again = [r.shard_for(view(x_user=f"u{i}"), random.Random()) for i in range(4000)]
        assert shards == again
        counts = Counter(shards)
        assert set(counts) == {"0", "1", "2", "3"}
        assert max(counts.values()) < 1.15 * 1000


def test_random_partition_uses_every_shard() -> None:
    r = rule(key="header:x", strategy="random", shards=["a", "b"])
    assert {r.shard_for(view(), random.Random(s)) for s in range(20)} == {"a", "b"}


def test_routes_match_split_and_rewrite() -> None:
    settings = parsed(validate_settings({"routes": [
        {"match": {"path_prefix": "/admin", "methods": ["POST"]},
         "request_headers": {"set": {"x-admin": "1"}, "remove": ["cookie"]}, "timeout": "2s"},
        {"match": {"headers": {"x-canary": "yes"}}, "split": [{"subset": {"version": "v2"}}]},
        {"split": [{"subset": {"version": "v1"}, "weight": 90},
                   {"subset": {"version": "v2"}, "weight": 10}]},
    ]}))
    table = RouteTable(settings.routes)
    rng = random.Random(5)
    admin = table.choose(view("/admin/x", "POST"), rng)
    assert admin is not None and admin.timeout == 2.0 and admin.subset == ()
    assert admin.set_headers == ((b"x-admin", b"1"),)
    assert admin.remove_headers == frozenset({b"cookie", b"x-admin"})
    canary = table.choose(view("/", x_canary="yes"), rng)
    assert canary is not None and canary.subset == (("version", "v2"),)
    split = Counter(table.choose(view("/shop"), rng).subset for _ in range(10000))  # type: ignore[union-attr]
    assert abs(split[(("version", "v2"),)] / 10000 - 0.10) < 0.015


def test_routes_that_all_miss() -> None:
    table = RouteTable(parsed(validate_settings(
        {"routes": [{"match": {"path_prefix": "/api"}}]})).routes)
    assert table.choose(view("/other"), random.Random()) is None


PATH_ROUTES = [
    {"match": {"path_prefix": "/admin", "methods": ["POST", "DELETE"]}, "timeout": "2s"},
    {"match": {"path_prefix": "/caf\u00e9"}, "split": [{"subset": {"version": "v3"}}]},
    {"match": {"path_prefix": "/\u20ac"}, "split": [{"subset": {"version": "v4"}}]},
    {"match": {"path_prefix": "/api/"}, "split": [{"subset": {"version": "v2"}}]},
]


@pytest.mark.parametrize("method, target, hit", [
    ("POST", "/admin/x", True), ("GET", "/admin/x", False), ("DELETE", "/admin", True),
    ("GET", "/api/v1?q=/admin", True), ("GET", "/api?x", False), ("GET", "/api/", True),
    ("GET", "http://host/api/x?y", True), ("GET", "/other", False),
    ("GET", "/caf\u00e9/menu", True), ("GET", "/\u20ac", False), ("GET", "/a#/api/", False),
    ("PATCH", "*", False), ("GET", "//[a://", False), ("GET", "/api/[x://?y", True),
])
def test_routes_on_the_raw_request_line_choose_as_on_a_view(method: str, target: str,
                                                            hit: bool) -> None:
    """With no route on headers, a request is routed on its method and target as
    received, without a view, and to the same route."""
    table = RouteTable(parsed(validate_settings({"routes": PATH_ROUTES})).routes)
    assert not table.needs_headers
    raw = table.choose_raw(method.encode("latin-1"), target.encode("latin-1", "replace"),
                           random.Random(1))
    viewed = table.choose(view(target.encode("latin-1", "replace").decode("latin-1"), method),
                          random.Random(1))
    assert raw == viewed
    assert (raw is not None) == hit


def test_a_route_on_headers_needs_a_view() -> None:
    table = RouteTable(parsed(validate_settings({"routes": [
        {"match": {"path_prefix": "/a"}}, {"match": {"headers": {"x-canary": "yes"}}}]})).routes)
    assert table.needs_headers


def test_request_view_keys() -> None:
    v = RequestView("GET", "/users/42/orders?tenant=acme&x=1",
                    {"cookie": "a=1; session=abc", "x-user": "bob"}, "10.0.0.9")
    assert v.key("path:0") == "users" and v.key("path:1") == "42" and v.key("path:9") is None
    assert v.key("query:tenant") == "acme" and v.key("query:nope") is None
    assert v.key("cookie:session") == "abc" and v.key("header:X-User") == "bob"
    assert v.key("source_ip") == "10.0.0.9"

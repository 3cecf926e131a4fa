"""A pushed snapshot is read whole and strictly: every field's type and range, so that
nothing malformed reaches ``Sidecar.apply`` (where it used to fail half-way through)."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from meshlet.errors import ConfigError
from meshlet.proxy.config import MAX_VERSION, Snapshot

GOOD: dict[str, Any] = {
    "version": 3, "service": "web", "instance": "web-1", "zone": "a", "node": "n1",
    "listeners": [{"name": "api", "direction": "outbound", "host": "127.0.0.1",
                   "port": 0, "protocol": "http"}],
    "clusters": {"outbound:api": {"name": "api", "settings": {"lb": "random"},
                                  "endpoints": [{"id": "e1", "address": "10.0.0.1",
                                                 "port": 80, "weight": 2, "zone": "a",
                                                 "node": "n2", "healthy": False,
                                                 "meta": {"v": "2"}}]}},
}


def with_change(path: tuple[Any, ...], value: Any) -> dict[str, Any]:
    d = copy.deepcopy(GOOD)
    target = d
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = value
    return d


def test_a_good_snapshot_round_trips() -> None:
    snap = Snapshot.from_dict(GOOD)
    assert snap.version == 3 and snap.clusters["outbound:api"].endpoints[0].weight == 2
    assert Snapshot.from_dict(snap.to_dict()) == snap
    assert Snapshot.from_dict({**GOOD, "version": MAX_VERSION}).version == MAX_VERSION


ENDPOINT = ("clusters", "outbound:api", "endpoints", 0)


@pytest.mark.parametrize(("path", "value", "field"), [
    (("version",), MAX_VERSION + 1, "version"),
    (("version",), -1, "version"),
    (("version",), True, "version"),
    (("version",), 2.0, "version"),
    (("version",), "3", "version"),
    (("service",), 5, "snapshot"),
    (("instance",), "x" * 1025, "snapshot"),
    (("listeners",), {"a": 1}, "listeners"),
    (("listeners", 0, "port"), 65536, "listeners"),
    (("listeners", 0, "direction"), "sideways", "listeners"),
    (("listeners", 0, "protocol"), "h3", "listeners"),
    (("listeners", 0, "extra"), 1, "listeners"),
    (("clusters",), [], "clusters"),
    (("clusters", "outbound:api"), "api", "clusters"),
    (("clusters", "outbound:api", "settings"), [], "settings"),
    (("clusters", "outbound:api", "endpoints"), {}, "endpoints"),
    ((*ENDPOINT, "port"), 0, "endpoints"),
    ((*ENDPOINT, "port"), "80", "endpoints"),
    ((*ENDPOINT, "weight"), 10_001, "endpoints"),
    ((*ENDPOINT, "weight"), "heavy", "endpoints"),
    ((*ENDPOINT, "healthy"), "yes", "endpoints"),
    ((*ENDPOINT, "id"), None, "endpoints"),
    ((*ENDPOINT, "address"), ["10.0.0.1"], "endpoints"),
    ((*ENDPOINT, "meta"), {"v": 2}, "endpoints"),
    ((*ENDPOINT, "unknown"), 1, "endpoints"),
])
def test_a_bad_field_is_refused_with_its_name(path: tuple[Any, ...], value: Any,
                                              field: str) -> None:
    with pytest.raises(ConfigError) as refused:
        Snapshot.from_dict(with_change(path, value))
    assert refused.value.field == field


@pytest.mark.parametrize("value", [None, [], "snapshot", 3, {"service": "web"}])
def test_not_a_snapshot_at_all(value: Any) -> None:
    with pytest.raises(ConfigError) as refused:
        Snapshot.from_dict(value)
    assert refused.value.field == "snapshot"


def test_too_many_endpoints() -> None:
    endpoint = GOOD["clusters"]["outbound:api"]["endpoints"][0]
    with pytest.raises(ConfigError, match="at most 10000"):
        Snapshot.from_dict(with_change(ENDPOINT[:-1], [endpoint] * 10_001))

"""Intentions' pure rules: validation naming the field, Consul's precedence (exact
destination, then exact source; deny first at equal precedence), L7 permissions in
order, and the default policy."""

from __future__ import annotations

import pytest

from meshlet.intention_rules import (
    Intention,
    IntentionError,
    Intentions,
    normalize_path,
    precedence,
)


def make(source: str, destination: str, action: str = "", **extra: object) -> Intention:
    raw: dict[str, object] = {"source": source, "destination": destination, **extra}
    if action:
        raw["action"] = action
    return Intention.from_dict(raw)


def test_exact_beats_wildcard_and_destination_weighs_more() -> None:
    rules = [make("*", "*", "deny"), make("web", "*", "allow"),
             make("*", "db", "deny"), make("web", "db", "allow")]
    assert [precedence(i) for i in rules] == [1, 2, 3, 4]
    db = Intentions("db", rules, default="allow")
    assert db.decide("web").allowed                       # exact pair
    assert not db.decide("api").allowed                   # * => db deny
    cache = Intentions("cache", rules, default="allow")
    assert cache.decide("web").allowed                    # web => * allow
    assert not cache.decide("api").allowed                # * => * deny
    assert not cache.decide("").allowed                   # no identity: only * sources
    assert Intentions("x", [], default="deny").decide("web").why == "default deny"


def test_deny_beats_allow_at_equal_precedence() -> None:
    both = [make("web", "db", "allow"), make("web", "db", "deny")]
    assert not Intentions("db", both).decide("web").allowed


def test_l7_permissions_match_in_order_then_the_default() -> None:
    rule = make("web", "api", permissions=[
        {"action": "deny", "http": {"path_prefix": "/admin"}},
        {"action": "allow", "http": {"path_prefix": "/v1/", "methods": ["GET", "HEAD"],
                                     "headers": [{"name": "X-Tenant", "prefix": "acme"}]}}])
    api = Intentions("api", [rule], default="deny")
    assert api.l7
    assert api.decide("web", "GET", "/v1/items", {"x-tenant": "acme-1"}).allowed
    assert not api.decide("web", "POST", "/v1/items", {"x-tenant": "acme-1"}).allowed
    assert not api.decide("web", "GET", "/v1/items", {}).allowed
    assert not api.decide("web", "GET", "/admin/x", {"x-tenant": "acme"}).allowed
    assert "no permission matched" in api.decide("web", "GET", "/other").why
    inverted = make("web", "api", permissions=[{"action": "allow", "http": {
        "headers": [{"name": "x-debug", "present": True, "invert": True}]}}])
    assert Intentions("api", [inverted], "deny").decide("web", "GET", "/", {}).allowed
    assert not Intentions("api", [inverted], "deny").decide(
        "web", "GET", "/", {"x-debug": "1"}).allowed


@pytest.mark.parametrize(("raw", "field"), [
    ({"source": "Web", "destination": "db", "action": "allow"}, "source"),
    ({"source": "web", "destination": "db"}, "action"),
    ({"source": "web", "destination": "db", "action": "maybe"}, "action"),
    ({"source": "web", "destination": "db", "action": "allow",
      "permissions": [{"action": "allow"}]}, "action"),
    ({"source": "web", "destination": "db", "extra": 1}, "intention.extra"),
    ({"source": "web", "destination": "db",
      "permissions": [{"action": "allow", "http": {"path_prefix": "x"}}]},
     "permissions[0].http.path_prefix"),
    ({"source": "web", "destination": "db",
      "permissions": [{"action": "allow", "http": {"methods": ["BREW"]}}]},
     "permissions[0].http.methods"),
    ({"source": "web", "destination": "db", "permissions": [{"action": "allow", "http": {
        "headers": [{"name": "a b", "present": True}]}}]},
     "permissions[0].http.headers[0].name"),
    ({"source": "web", "destination": "db", "permissions": [{"action": "allow", "http": {
        "headers": [{"name": "a", "exact": "x", "prefix": "y"}]}}]},
     "permissions[0].http.headers[0]"),
    ({"source": "web", "destination": "db", "action": "allow", "description": "a\nb"},
     "description"),
])
def test_malformed_intentions_are_refused_naming_the_field(raw: dict, field: str) -> None:  # type: ignore[type-arg]
    with pytest.raises(IntentionError) as info:
        Intention.from_dict(raw)
    assert info.value.field == field


@pytest.mark.parametrize("path", ["/admin", "//admin", "/x/../admin", "/./admin/",
                                  "/%61dmin", "/%61%64min/x", "/v1/../../admin"])
def test_a_path_is_matched_as_the_app_would_read_it(path: str) -> None:
    rule = make("web", "api", permissions=[
        {"action": "deny", "http": {"path_prefix": "/admin"}},
        {"action": "allow", "http": {"path_prefix": "/"}}])
    assert not Intentions("api", [rule], "allow").decide("web", "GET", path).allowed
    assert normalize_path("/a/%2f/b%7e") == "/a/%2F/b~"


def test_round_trip() -> None:
    rule = make("web", "api", permissions=[{"action": "allow", "http": {
        "path_exact": "/x", "methods": ["GET"], "headers": [{"name": "h", "exact": "v"}]}}],
        description="reads")
    again = Intention.from_dict({k: v for k, v in rule.to_dict().items()
                                 if k != "precedence"})
    assert again == rule and rule.to_dict()["precedence"] == 4

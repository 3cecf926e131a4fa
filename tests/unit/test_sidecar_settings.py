"""The sidecar's pydantic-free settings reader agrees with the control plane's model.

Both must accept and normalise alike every value the control plane stores, and refuse
alike (naming the same field) what it refuses; the sidecar may only be stricter about
pydantic's lax coercions of values the control plane never stores (listed below).
"""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st

from meshlet.errors import ConfigError
from meshlet.proxy import settings as light
from meshlet.settings_rules import MAX_COUNT, MAX_DURATION, MAX_HEADERS, MAX_RATE
from meshlet.state import config_entry as model

INF, NAN = float("inf"), float("nan")

RANGES = [{"from": "a", "to": "f", "shard": "one"}, {"from": "g", "to": "z", "shard": "two"}]
CASES: list[dict[str, Any]] = [
    {}, {"lb": "maglev", "maglev_table_size": 4099}, {"lb": "ring_hash", "hash_on": "header:x"},
    {"lb": "peak_ewma", "ewma_decay": "5s"}, {"locality_min_healthy": 0.5},
    {"connect_timeout": "250ms", "request_timeout": 2, "per_try_timeout": "0s"},
    {"idle_timeout": 1.5}, {"retries": 0}, {"retries": 10}, {"retries": 2.0},
    {"retry_on": [502, 503]}, {"retry_on": "502,503"}, {"retry_on": 429}, {"retry_on": []},
    {"retry_non_idempotent": True}, {"retry_backoff": "1ms", "retry_backoff_max": "2ms"},
    {"retry_budget_percent": 0}, {"max_connections": 1, "max_requests": 10 ** 6},
    {"outlier_consecutive_failures": 0, "outlier_base_ejection_time": "1s"},
    {"rate_limit_rps": 5.5, "rate_limit_burst": 3}, {"access_log": "all"},
    {"protocol": "tcp"}, {"hash_on": None}, {"partition": None},
    {"routes": [{}]},
    {"routes": [{"match": {"path_prefix": "/api", "headers": {"x-v": "2"},
                           "methods": ["GET"]},
                 "split": [{"subset": {"version": "v2"}, "weight": 3}, {"weight": 1}],
                 "request_headers": {"set": {"x-a": "1"}, "remove": ["cookie"]},
                 "timeout": "2s"}]},
    {"partition": {"key": "header:tenant", "strategy": "hash", "shards": 4}},
    {"partition": {"key": "query:t", "strategy": "hash", "shards": ["a", "b"],
                   "hash": "modulo", "default_shard": "a"}},
    {"partition": {"key": "path:1", "strategy": "random", "shards": 2}},
    {"partition": {"key": "cookie:t", "strategy": "range", "ranges": RANGES}},
    {"partition": {"key": "header:n", "strategy": "range", "numeric": True,
                   "ranges": [{"from": 0, "to": 9.5, "shard": "low"},
                              {"from": "10", "to": 99, "shard": "high"}]}},
    # refused by both
    {"lb": "fastest"}, {"lb": 1}, {"retries": 11}, {"retries": -1}, {"retries": 2.5},
    {"retries": None}, {"min_ring_size": 8}, {"maglev_table_size": 65536},
    {"ewma_decay": 0}, {"connect_timeout": "soon"}, {"connect_timeout": True},
    {"per_try_timeout": -1}, {"retry_on": [404]}, {"retry_on": "5xx"}, {"retry_on": ["x"]},
    {"retry_backoff": "1s", "retry_backoff_max": "10ms"}, {"locality_min_healthy": 1.5},
    {"access_log": "some"}, {"nonsense": 1}, {"hash_on": "body"}, {"protocol": "udp"},
    {"routes": "all"}, {"routes": [{"match": {"path_prefix": "api"}}]},
    {"routes": [{"match": {"headers": {"a": 1}}}]}, {"routes": [{"match": {"methods": "GET"}}]},
    {"routes": [{"split": [{"weight": 0}]}]}, {"routes": [{"split": [{"weight": 10001}]}]},
    {"routes": [{"timeout": 0}]}, {"routes": [{"extra": 1}]},
    {"partition": {"key": "header:t"}}, {"partition": {"strategy": "hash", "shards": 2}},
    {"partition": {"key": "header:t", "strategy": "roulette"}},
    {"partition": {"key": "header:t", "strategy": "hash"}},
    {"partition": {"key": "header:t", "strategy": "hash", "shards": 0}},
    {"partition": {"key": "header:t", "strategy": "hash", "shards": 5000}},
    {"partition": {"key": "header:t", "strategy": "hash", "shards": ["a", "a"]}},
    {"partition": {"key": "header:t", "strategy": "range"}},
    {"partition": {"key": "header:t", "strategy": "range",
                   "ranges": [{"from": "f", "to": "a", "shard": "x"}]}},
    {"partition": {"key": "header:t", "strategy": "range",
                   "ranges": [{"from": "a", "to": "f", "shard": "x"},
                              {"from": "c", "to": "z", "shard": "y"}]}},
    {"partition": {"key": "header:t", "strategy": "range",
                   "ranges": [{"from": 1, "to": 5, "shard": "x"}]}},
    {"partition": {"key": "header:t", "strategy": "range",
                   "ranges": [{"from": "a", "to": "b", "shard": ""}]}},
    {"partition": {"key": "header:t", "strategy": "range",
                   "ranges": [{"from": "a", "shard": "x"}]}},
    {"partition": {"key": "header:t", "strategy": "range", "numeric": True,
                   "ranges": [{"from": "one", "to": 5, "shard": "x"}]}},
]



def route(**parts: Any) -> dict[str, Any]:
    return {"routes": [parts]}


def headers_set(headers: dict[str, Any]) -> dict[str, Any]:
    return route(request_headers={"set": headers})


def numeric_range(low: Any, high: Any) -> dict[str, Any]:
    return {"partition": {"key": "header:n", "strategy": "range", "numeric": True,
                          "ranges": [{"from": low, "to": high, "shard": "x"}]}}


# Headers the sidecar writes into requests, and numbers: what reaches the wire or the
# timers must be a token, free of CR/LF/NUL, finite and bounded (issue 13, inputs).
INPUT_CASES: list[dict[str, Any]] = [
    # accepted
    headers_set({"X-Forwarded-Proto": "https", "x-tab": "a\tb", "x-empty": "",
                 "x!#$%&'*+-.^_`|~": "v"}),
    route(request_headers={"remove": ["Cookie", "x-secret"]}),
    route(match={"methods": ["GET", "PURGE"], "headers": {"X-V": "2 or 3"}}),
    headers_set({f"h{i}": "v" for i in range(MAX_HEADERS)}),
    headers_set({"x-latin": "caf\xe9 \xa0\xff", "x-long": "\xe9" * 8192,
                 "h" * 256: "v"}),
    route(match={"headers": {"x-v": "caf\xe9"}}),
    {"request_timeout": "24h", "outlier_max_ejection_time": MAX_DURATION},
    {"max_connections": MAX_COUNT, "rate_limit_rps": MAX_RATE, "rate_limit_burst": MAX_COUNT},
    {"routes": [{}] * 256}, route(split=[{"weight": 1}] * 64),
    numeric_range(-1e300, 1e300),
    # refused: header names and values
    headers_set({"x-a": "1\r\nGET /admin HTTP/1.1\r\nHost: app"}),
    headers_set({"x-a": "1\nx-b: 2"}), headers_set({"x-a": "1\r"}),
    headers_set({"x-a": "nul\x00"}), headers_set({"x-a": "bell\x07"}),
    headers_set({"x-a": "del\x7f"}), headers_set({"x-a": "v" * 8193}),
    headers_set({"x a": "1"}), headers_set({"x-a\r\n": "1"}), headers_set({"x-a\n": "1"}),
    headers_set({"": "1"}), headers_set({"x:y": "1"}), headers_set({"x\x00": "1"}),
    headers_set({"é": "1"}), headers_set({"h" * 257: "1"}), headers_set({"x-a": 1}),
    headers_set({f"h{i}": "v" for i in range(MAX_HEADERS + 1)}),
    route(request_headers={"remove": ["x a"]}), route(request_headers={"remove": ["x\n"]}),
    route(request_headers={"remove": ["h"] * (MAX_HEADERS + 1)}),
    route(match={"headers": {"x-v": "2\r\n"}}), route(match={"headers": {"x v": "2"}}),
    # refused: what has no Latin-1 bytes to write (a lone surrogate broke every push)
    headers_set({"x": "\ud800"}), headers_set({"x": "a\udfffb"}), headers_set({"\ud800": "1"}),
    headers_set({"x": "\u20ac"}), headers_set({"x": "\u65e5\u672c"}),
    headers_set({"x": "c1 \x85"}), headers_set({"x": "\x9f"}),
    route(match={"headers": {"x-v": "\ud800"}}), route(match={"headers": {"x-v": "\u0100"}}),
    headers_set({"x": "\xe9" * 8193}),
    route(match={"methods": ["GET\r\n"]}), route(match={"methods": ["G ET"]}),
    route(match={"methods": [""]}), route(match={"methods": ["GET"] * 17}),
    route(split=[{"subset": {str(i): "v" for i in range(MAX_HEADERS + 1)}}]),
    {"hash_on": "header:x\n"}, {"partition": {"key": "header:t\n", "strategy": "hash",
                                              "shards": 2}},
    # refused: lists beyond their bound
    {"routes": [{}] * 257}, route(split=[{"weight": 1}] * 65), {"retry_on": [502] * 102},
    {"partition": {"key": "header:t", "strategy": "hash",
                   "shards": [str(i) for i in range(4097)]}},
    {"partition": {"key": "header:t", "strategy": "hash", "shards": 10 ** 9}},
    {"partition": {"key": "header:t", "strategy": "hash", "shards": 10 ** 400}},
    {"partition": {"key": "header:t", "strategy": "hash", "shards": -1}},
    # refused: infinite, NaN and out-of-range numbers, for each kind of setting
    {"request_timeout": INF}, {"request_timeout": NAN}, {"request_timeout": -INF},
    {"request_timeout": "9" * 400}, {"request_timeout": "25h"},
    {"per_try_timeout": INF}, {"retry_backoff": NAN}, {"ewma_decay": INF},
    {"routes": [{"timeout": INF}]}, {"routes": [{"timeout": "24h1ms"}]},
    {"routes": [{"timeout": 86400.5}]},
    {"retries": INF}, {"retries": NAN}, {"max_requests": 10 ** 400},
    {"max_connections": MAX_COUNT + 1}, {"rate_limit_burst": INF},
    {"rate_limit_rps": INF}, {"rate_limit_rps": NAN}, {"rate_limit_rps": MAX_RATE * 2},
    {"retry_budget_min_per_second": INF}, {"locality_min_healthy": NAN},
    {"retry_budget_percent": INF}, {"routes": [{"split": [{"weight": INF}]}]},
    numeric_range(-INF, 5), numeric_range(0, NAN), numeric_range(10 ** 400, 5),
    numeric_range("-inf", 5), numeric_range("nan", 5), numeric_range(0, "1e400"),
    {"partition": {"key": "header:t", "strategy": "range",
                   "ranges": [{"from": "a", "to": INF, "shard": "x"}]}},
    {"partition": {"key": "header:t", "strategy": "hash", "shards": INF}},
]
CASES += INPUT_CASES
# pydantic's lax mode coerces these; the control plane stores the coerced value, so a
# sidecar never receives them from the agent, and it refuses them when sent by hand.
LAX_ONLY: list[dict[str, Any]] = [
    {"retries": True}, {"retries": "3"}, {"retry_budget_percent": "5"},
    {"retry_non_idempotent": "yes"}, {"retry_non_idempotent": 1},
    {"partition": {"key": "header:t", "strategy": "hash", "shards": "3"}},
    {"routes": [{"split": [{"weight": "2"}]}]},
]


def verdict(validate: Any, settings: dict[str, Any]) -> tuple[str, Any]:
    try:
        return "ok", validate(settings)
    except ConfigError as exc:
        return "refused", exc.field


def test_same_keys_and_defaults() -> None:
    assert light.KNOWN_KEYS == model.KNOWN_KEYS
    assert light.DEFAULTS == model.DEFAULTS
    assert light.LB_POLICIES == model.LB_POLICIES
    assert light.effective({"retries": 1}) == model.effective({"retries": 1})


@pytest.mark.parametrize("settings", CASES, ids=repr)
def test_same_verdict_normalised_form_and_field(settings: dict[str, Any]) -> None:
    assert verdict(light.validate_settings, settings) == \
        verdict(model.validate_settings, settings)


@pytest.mark.parametrize("settings", CASES, ids=repr)
def test_the_stored_form_reads_back_unchanged(settings: dict[str, Any]) -> None:
    status, stored = verdict(model.validate_settings, settings)
    if status == "ok":
        assert light.validate_settings(stored) == stored
        assert light.dump(light.parsed(stored)) == model.parsed(stored).model_dump(
            by_alias=True, mode="json")


@pytest.mark.parametrize("settings", LAX_ONLY, ids=repr)
def test_lax_coercions_are_refused_naming_the_field(settings: dict[str, Any]) -> None:
    assert verdict(model.validate_settings, settings)[0] == "ok"
    with pytest.raises(ConfigError) as info:
        light.validate_settings(settings)
    assert info.value.field is not None
    assert info.value.field.split(".")[0] == next(iter(settings))


@pytest.mark.parametrize("settings", INPUT_CASES, ids=repr)
def test_inputs_refused_alike_with_the_same_message(settings: dict[str, Any]) -> None:
    """The header, length and number rules live once, in settings_rules: both readers
    give the very same message."""
    def outcome(validate: Any) -> str:
        try:
            validate(settings)
        except ConfigError as exc:
            return exc.message
        return "ok"
    assert outcome(light.validate_settings) == outcome(model.validate_settings)


def test_the_new_rules_say_what_is_wrong() -> None:
    cases = {
        "routes.0.request_headers.set: header 'x-a': the value holds CR, LF, NUL or "
        "another control character": headers_set({"x-a": "1\r\nGET / HTTP/1.1"}),
        "routes.0.request_headers.set: header 'x': the value holds '\\ud800' (U+D800); a "
        "header value may hold visible Latin-1 characters (up to U+00FF, no control "
        "characters), spaces and tabs": headers_set({"x": "\ud800"}),
        "routes.0.request_headers.set: header 'x': the value is longer than 8192 bytes":
            headers_set({"x": "\xe9" * 8193}),
        "routes.0.request_headers.set: 'x a' is not a header name: an HTTP token "
        "(letters, digits and !#$%&'*+-.^_`|~)": headers_set({"x a": "1"}),
        "routes.0.match.methods: 'G ET' is not an HTTP method (a token of letters, digits "
        "and !#$%&'*+-.^_`|~)": route(match={"methods": ["G ET"]}),
        "request_timeout: must be a finite number of seconds": {"request_timeout": INF},
        "request_timeout: Input should be less than or equal to 86400":
            {"request_timeout": "25h"},
        "rate_limit_rps: Input should be a finite number": {"rate_limit_rps": NAN},
        "max_connections: Input should be less than or equal to 1000000":
            {"max_connections": MAX_COUNT + 1},
        "partition.ranges.0.from: '-inf' is not a finite number": numeric_range("-inf", 5),
        "routes: at most 256 routes, not 257": {"routes": [{}] * 257},
    }
    for message, settings in cases.items():
        for reader in (light, model):
            with pytest.raises(ConfigError) as info:
                reader.validate_settings(settings)
            assert info.value.message == message


def test_messages_name_the_field_and_the_problem() -> None:
    cases = {
        "retries: Input should be less than or equal to 10": {"retries": 11},
        "lb: Input should be 'round_robin', 'weighted_round_robin', 'random', "
        "'least_request', 'peak_ewma', 'ring_hash', 'maglev' or 'locality'": {"lb": "x"},
        "retry_on: 404 is not a 5xx status or 429": {"retry_on": [404]},
        "partition.ranges.1: from 'c' overlaps or comes before the previous range's end "
        "'f'; ranges must be ordered and must not overlap": {"partition": {
            "key": "header:t", "strategy": "range",
            "ranges": [{"from": "a", "to": "f", "shard": "x"},
                       {"from": "c", "to": "z", "shard": "y"}]}},
        "connect_timeout: 'soon' is not a duration (examples: 2s, 250ms, 1m)":
            {"connect_timeout": "soon"},
    }
    for message, settings in cases.items():
        with pytest.raises(ConfigError) as info:
            light.validate_settings(settings)
        assert info.value.message == message
        with pytest.raises(ConfigError) as info:
            model.validate_settings(settings)
        assert info.value.message == message


def test_not_an_object() -> None:
    with pytest.raises(ConfigError, match="settings: expected an object"):
        light.validate_settings(["lb"])  # type: ignore[arg-type]


def test_the_typed_view() -> None:
    s = light.parsed(light.validate_settings({"retry_on": "502", "routes": [{"timeout": "1s"}],
                                              "partition": {"key": "header:t",
                                                            "strategy": "hash", "shards": 2}}))
    assert s.retry_on == [502] and s.routes[0].timeout == 1.0
    assert s.partition is not None and s.partition.shard_names() == ["0", "1"]
    assert s.lb == "round_robin" and s.connect_timeout == 1.0


def boundary_cases() -> list[dict[str, Any]]:
    """Every bound the control plane's model declares, probed at, just inside and just
    outside it, with values of the wrong kind; generated from the model's own field
    metadata, so a bound changed on one side only is caught."""
    import annotated_types

    cases: list[dict[str, Any]] = []
    for name, info in model.Settings.model_fields.items():
        kind = info.annotation
        if kind not in (int, float):
            continue
        step = 1 if kind is int else 0.001
        for meta in info.metadata:
            for attr in ("ge", "le", "gt", "lt"):
                bound = getattr(meta, attr, None)
                if isinstance(meta, annotated_types.BaseMetadata) and bound is not None:
                    cases += [{name: bound - step}, {name: bound}, {name: bound + step}]
        cases += [{name: info.default}, {name: None}, {name: "many"}, {name: [1]},
                  {name: INF}, {name: -INF}, {name: NAN}, {name: 10 ** 400}]
    return cases


BOUNDARY_CASES = boundary_cases()


def test_every_declared_bound_is_probed() -> None:
    assert len(BOUNDARY_CASES) > 100
    probed = {next(iter(case)) for case in BOUNDARY_CASES}
    assert {"min_ring_size", "max_pending_requests", "locality_max_outstanding",
            "rate_limit_burst", "retries", "outlier_max_ejection_percent"} <= probed


def test_every_number_has_an_upper_bound() -> None:
    """No count, rate, size or duration is unbounded above (a bound both readers hold
    is then probed by test_same_verdict_at_every_bound)."""
    for name, info in model.Settings.model_fields.items():
        if info.annotation in (int, float):
            assert any(getattr(m, "le", None) is not None for m in info.metadata), name


@pytest.mark.parametrize("settings", BOUNDARY_CASES, ids=repr)
def test_same_verdict_at_every_bound(settings: dict[str, Any]) -> None:
    assert verdict(light.validate_settings, settings) == \
        verdict(model.validate_settings, settings)


HEADER_TEXT = st.text(st.characters(codec="utf-8"), max_size=6) | st.sampled_from(
    ["x-a", "X-Forwarded-For", "a\r\nb", "\n", "\x00", "tab\there", "é"])


@hypothesis_settings(max_examples=200, deadline=None)
@given(st.dictionaries(HEADER_TEXT, HEADER_TEXT, max_size=3), st.lists(HEADER_TEXT, max_size=3))
def test_any_header_rewrite_gets_the_same_verdict_and_never_carries_cr_lf_nul(
        headers: dict[str, str], removed: list[str]) -> None:
    rewrite = route(request_headers={"set": headers, "remove": removed},
                      match={"headers": headers})
    outcome = verdict(light.validate_settings, rewrite)
    assert outcome == verdict(model.validate_settings, rewrite)
    if outcome[0] == "ok":
        written = "".join([*headers, *headers.values(), *removed])
        assert not set(written) & {"\r", "\n", "\x00"}

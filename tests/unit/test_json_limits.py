"""JSON from outside: deep nesting, huge bodies, NaN and Infinity are refused as bad
input (ConfigError, a 400), never parsed into a RecursionError or an infinite float."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from meshlet.errors import ConfigError
from meshlet.json_limits import MAX_BYTES, MAX_DEPTH, loads, too_deep


def nested(depth: int, opening: str = "[", closing: str = "]") -> bytes:
    return (opening * depth + closing * depth).encode()


def test_nesting_up_to_the_limit_parses() -> None:
    assert loads(nested(MAX_DEPTH)) == json.loads(nested(MAX_DEPTH))
    objects = '{"a":' * MAX_DEPTH + "1" + "}" * MAX_DEPTH
    assert loads(objects.encode()) is not None


@pytest.mark.parametrize("raw", [
    nested(MAX_DEPTH + 1), nested(10_000), ('{"a":' * 33 + "1" + "}" * 33).encode(),
    b"[" * 10_000,  # never closed: not JSON either, and no recursion to find out
    b"[" * 20 + b"{" * 20 + b"}" * 20 + b"]" * 20,
    (b"[" * 33 + b"]" * 33 + b",") * 1000,
], ids=lambda raw: f"{raw[:12]!r}… ({len(raw)} bytes)")
def test_deeper_than_the_limit_is_refused(raw: bytes) -> None:
    with pytest.raises(ConfigError, match=f"more than {MAX_DEPTH} deep") as info:
        loads(raw)
    assert info.value.field == "body"


def test_brackets_inside_strings_do_not_count() -> None:
    text = json.dumps({"a": "[" * 1000, "b": ["\\\"[[[" * 100, "]]]"]})
    assert not too_deep(text.encode())
    assert loads(text)["a"] == "[" * 1000


def test_an_unclosed_string_of_escaped_quotes_is_scanned_once() -> None:
    """Each escaped quote looks like a string's start to a naive search, which would
    then rescan the rest of the text from each: hours for this body, not milliseconds."""
    raw = b'["' + b'\\"' * 300_000 + b"[" * 40
    assert not too_deep(raw)  # the brackets are inside the (unclosed) string
    with pytest.raises(ConfigError, match="not valid JSON"):
        loads(raw)


def test_many_shallow_values_are_not_deep() -> None:
    raw = b"[" + b",".join([b"[[1]]"] * 50_000) + b"]"
    assert not too_deep(raw)
    assert len(loads(raw)) == 50_000


@pytest.mark.parametrize("raw, problem", [
    (b"[Infinity]", "Infinity is not a JSON number"),
    (b'{"rate_limit_rps": -Infinity}', "-Infinity is not a JSON number"),
    (b"NaN", "NaN is not a JSON number"),
    (b'{"request_timeout": 1e400}', "1e400 is out of a number's range"),
    (b"[-1E999]", "-1E999 is out of a number's range"),
])
def test_non_finite_numbers_are_refused(raw: bytes, problem: str) -> None:
    with pytest.raises(ConfigError, match=problem):
        loads(raw)


def test_size_limit() -> None:
    fits = b'"' + b"x" * (MAX_BYTES - 2) + b'"'
    assert len(loads(fits)) == MAX_BYTES - 2
    with pytest.raises(ConfigError, match=f"at most {MAX_BYTES}"):
        loads(fits + b" ")


@pytest.mark.parametrize("raw", [b"{not json", b"\xff\xfe", b"[1,]", b'"unterminated'])
def test_not_json_is_a_config_error(raw: bytes) -> None:
    with pytest.raises(ConfigError, match="request body is not valid JSON"):
        loads(raw)


def test_empty_is_null_and_what_names_the_input() -> None:
    assert loads(b"") is None
    with pytest.raises(ConfigError, match=r"^config snapshot nests"):
        loads(nested(40), what="config snapshot")


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False,
                                                         allow_infinity=False) | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=40)


def depth_of(value: object) -> int:
    if isinstance(value, list):
        return 1 + max((depth_of(v) for v in value), default=0)
    if isinstance(value, dict):
        return 1 + max((depth_of(v) for v in value.values()), default=0)
    return 0


@settings(max_examples=300, deadline=None)
@given(json_values, st.integers(min_value=0, max_value=8))
def test_too_deep_agrees_with_the_parsed_depth(value: object, limit: int) -> None:
    raw = json.dumps(value).encode()
    assert too_deep(raw, limit) == (depth_of(value) > limit)


@pytest.mark.parametrize("text, problem", [
    ('{"version": Infinity}', "Infinity is not a JSON number"),
    ("[" * 5000 + "]" * 5000, "more than 32 deep"),
    ("{", "not valid JSON"),
])
def test_a_sidecar_bootstrap_is_read_within_the_same_bounds(
        tmp_path: Path, text: str, problem: str) -> None:
    from meshlet.proxy.main import load_bootstrap
    path = tmp_path / "bootstrap.json"
    path.write_text(text)
    with pytest.raises(ConfigError, match=problem) as info:
        load_bootstrap(str(path))
    assert info.value.message.startswith(f"cannot read sidecar bootstrap {path}: its text")

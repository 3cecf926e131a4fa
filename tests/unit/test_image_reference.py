"""Image references: Docker's NAME[:TAG] rules and image ids."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from meshlet.errors import ConfigError
from meshlet.image.reference import Lookup, Reference, parse_lookup, parse_reference

HEX64 = "a" * 12 + "0123456789abcdef" * 3 + "b" * 4


@pytest.mark.parametrize(("text", "name", "tag"), [
    ("busybox", "busybox", "latest"),
    ("busybox:1.36", "busybox", "1.36"),
    ("my-org/web_app:v2_rc.1", "my-org/web_app", "v2_rc.1"),
    ("a__b/c.d/e---f:_x", "a__b/c.d/e---f", "_x"),
    ("x:" + "T" * 128, "x", "T" * 128),
])
def test_valid_references(text: str, name: str, tag: str) -> None:
    ref = parse_reference(text)
    assert ref == Reference(name, tag)
    assert str(ref) == f"{name}:{tag}"


@pytest.mark.parametrize(("text", "words"), [
    ("", "required"),
    ("Busybox", "is not valid"),
    ("web\n", "is not valid"),
    ("web:v1\n", "tag"),
    ("-web", "is not valid"),
    ("web-", "is not valid"),
    ("a..b", "is not valid"),
    ("a___b", "is not valid"),
    ("a//b", "is not valid"),
    ("/a", "is not valid"),
    ("web:", "tag"),
    ("web:.x", "tag"),
    ("web:-x", "tag"),
    ("web:" + "t" * 129, "tag"),
    ("web@sha256:" + HEX64, "digests"),
    ("localhost:5000/web", "is not valid"),
    (HEX64, "image id"),
    ("a" * 256, "longer than"),
])
def test_invalid_references_name_the_field(text: str, words: str) -> None:
    with pytest.raises(ConfigError) as err:
        parse_reference(text, "name")
    assert words in err.value.message and err.value.field == "name"


def test_lookups() -> None:
    assert parse_lookup("web") == Lookup(Reference("web", "latest"), None)
    assert parse_lookup("sha256:" + HEX64) == Lookup(None, HEX64)
    assert parse_lookup(HEX64) == Lookup(None, HEX64)
    assert parse_lookup(HEX64[:12]) == Lookup(Reference(HEX64[:12], "latest"), HEX64[:12])
    assert parse_lookup("sha256:" + HEX64[:12]) == Lookup(None, HEX64[:12])
    assert parse_lookup("abc").id_prefix is None  # too short to be an id
    for bad in ("sha256:abc", "sha256:" + "A" * 64, "Web", ""):
        with pytest.raises(ConfigError) as err:
            parse_lookup(bad)
        assert err.value.field == "image"


COMPONENT = st.from_regex(r"[a-z0-9]{1,5}(?:(?:[._]|__|-{1,2})[a-z0-9]{1,5}){0,2}",
                          fullmatch=True)


@given(st.lists(COMPONENT, min_size=1, max_size=3),
       st.from_regex(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,20}", fullmatch=True))
def test_what_the_grammar_makes_parses_back(parts: list[str], tag: str) -> None:
    name = "/".join(parts)
    if len(name) == 64:
        return
    assert parse_reference(f"{name}:{tag}") == Reference(name, tag)


@given(st.text(max_size=40))
def test_any_text_parses_or_is_a_config_error(text: str) -> None:
    try:
        ref = parse_reference(text)
    except ConfigError as exc:
        assert exc.field == "name"
    else:
        assert parse_reference(str(ref)) == ref
        assert ref.name == ref.name.lower() and "\n" not in str(ref)

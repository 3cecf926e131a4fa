"""The `meshlet up` file: valid shapes and errors that point at file, line and field."""

from __future__ import annotations

from pathlib import Path

import pytest

from meshlet.deploy.manifest import load_manifest, parse_manifest
from meshlet.errors import ConfigError

SHOP = Path(__file__).parents[2] / "examples" / "shop" / "meshlet.yaml"


def test_example_parses_in_dependency_order() -> None:
    m = load_manifest(SHOP)
    assert m.services["catalog"].replicas == 3
    assert m.services["catalog"].check.kind == "http"  # type: ignore[union-attr]
    assert m.start_order() == ["pricing", "catalog", "frontend"]


def test_command_string_is_split_and_durations_parsed() -> None:
    m = parse_manifest("services:\n  a:\n    command: python3 -m http.server\n"
                       "    check: {tcp: true, interval: 250ms}\n")
    assert m.services["a"].command == ["python3", "-m", "http.server"]
    assert m.services["a"].check.interval == 0.25  # type: ignore[union-attr]


@pytest.mark.parametrize("text, expected", [
    ("services:\n  a:\n    command: x\n    replicas: -1\n",
     "f.yaml:4: services.a.replicas: Input should be greater than or equal to 0"),
    ("services:\n  a:\n    command: x\n    colour: red\n",
     "f.yaml:4: services.a.colour: Extra inputs are not permitted"),
    ("services:\n  a:\n    replicas: 1\n", "f.yaml:2: services.a: give a command, or an image"),
    ("services:\n  a:\n    command: x\n    cpus: 2\n",
     "f.yaml:2: services.a: memory and cpus limit an image"),
    ("services:\n  a:\n    image: b\n    memory: 1k\n",
     "f.yaml:4: services.a.memory: '1k' is outside 6 MiB"),
    ("services:\n  a:\n    command: x\n    check: {http: /h, tcp: true}\n",
     "f.yaml:4: services.a.check: set exactly one of http, tcp or command"),
    ("services:\n  Bad:\n    command: x\n", "f.yaml:1: services: 'Bad' is not a valid"),
    ("services: [\n", "f.yaml:2: not valid YAML"),
    ("- a\n", "f.yaml: expected a mapping"),
    ("services:\n  a:\n    command: x\n    network: none\n",
     "f.yaml:4: services.a.network: a mesh service needs a network"),
    ("services:\n  a:\n    command: x\n    network: 'bad name'\n",
     "f.yaml:4: services.a.network: String should match pattern"),
])
def test_errors_name_line_and_field(text: str, expected: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_manifest(text, "f.yaml")
    assert str(info.value).startswith(expected)


def test_missing_file() -> None:
    with pytest.raises(ConfigError, match="cannot read"):
        load_manifest(Path("/nonexistent/meshlet.yaml"))


def test_network_puts_replicas_in_namespaces_unless_host() -> None:
    m = parse_manifest("services:\n  a:\n    command: x\n    network: front\n"
                       "  b:\n    command: x\n    network: host\n  c:\n    command: x\n")
    assert [m.services[n].in_namespace for n in "abc"] == [True, False, False]

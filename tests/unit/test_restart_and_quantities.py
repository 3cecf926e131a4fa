"""Restart policies and resource quantities as `docker run` and Kubernetes write them."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from meshlet.errors import ConfigError
from meshlet.quantities import MIN_MEMORY, parse_cpus, parse_memory
from meshlet.restart_policy import RestartPolicy, parse_restart


@pytest.mark.parametrize(("text", "code", "restarts", "again"), [
    ("no", 1, 0, False),
    ("always", 0, 50, True),
    ("unless-stopped", 0, 0, True),
    ("on-failure", 0, 0, False),
    ("on-failure", 3, 99, True),
    ("on-failure:2", 3, 1, True),
    ("on-failure:2", 3, 2, False),
    ("on-failure:2", 137, 0, True),
])
def test_policies_decide_as_docker_does(text: str, code: int, restarts: int,
                                         again: bool) -> None:
    assert parse_restart(text).should_restart(code, restarts) is again


@pytest.mark.parametrize("bad", ["", "sometimes", "always:3", "on-failure:", "on-failure:x",
                                 "on-failure:-1", "no\n", 3, None, "on-failure:99999999"])
def test_bad_policies_are_refused_naming_restart(bad: object) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_restart(bad)
    assert caught.value.field == "restart"


def test_policy_round_trips_as_text() -> None:
    for text in ("no", "always", "unless-stopped", "on-failure", "on-failure:5"):
        assert str(parse_restart(text)) == text
    assert RestartPolicy().name == "no"


@pytest.mark.parametrize(("text", "kubernetes", "size"), [
    ("64m", False, 64 << 20), ("64M", False, 64 << 20), ("1g", False, 1 << 30),
    ("7340032", False, 7340032), ("1.5g", False, 3 << 29),
    ("64Mi", True, 64 << 20), ("64M", True, 64_000_000), ("1Gi", True, 1 << 30),
    (16 << 20, False, 16 << 20),
])
def test_memory_sizes(text: object, kubernetes: bool, size: int) -> None:
    assert parse_memory(text, kubernetes=kubernetes) == size


@pytest.mark.parametrize("bad", ["", "m", "64x", "-1m", "1e9", "5", "5k", "64Mi", True,
                                 "99999999999999999t", None, "6 4m"])
def test_bad_memory_sizes_are_refused(bad: object) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_memory(bad)
    assert caught.value.field == "memory"


@pytest.mark.parametrize(("text", "cpus"), [("0.5", 0.5), ("2", 2.0), ("500m", 0.5),
                                            (1.25, 1.25), ("1024", 1024.0)])
def test_cpu_counts(text: object, cpus: float) -> None:
    assert parse_cpus(text) == cpus


@pytest.mark.parametrize("bad", ["0", "0m", "-1", "nan", "inf", "1025", "", "1e3", True,
                                 float("nan"), "1.5m"])
def test_bad_cpu_counts_are_refused(bad: object) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_cpus(bad)
    assert caught.value.field == "cpus"


@given(st.integers(min_value=MIN_MEMORY >> 20, max_value=1 << 20))
def test_mebibytes_read_the_same_in_both_styles(mib: int) -> None:
    assert parse_memory(f"{mib}m") == parse_memory(f"{mib}Mi", kubernetes=True) == mib << 20

"""Networks and IPAM in the state machine: pools, defaults, overlaps, allocation,
release, and errors that change nothing."""

from __future__ import annotations

import ipaddress
import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from meshlet.errors import ConfigError, Conflict, MeshletError, NotFound
from meshlet.state import StateMachine
from meshlet.state.commands import (
    AddressAssign,
    AddressRelease,
    Command,
    NetworkCreate,
    NetworkDelete,
    ServiceCidrSet,
)


class Machine:
    def __init__(self) -> None:
        self.sm = StateMachine()
        self.index = 0

    def apply(self, command: Command) -> Any:
        self.index += 1
        result = self.sm.apply(self.index, command)
        if result.error is not None:
            raise result.error
        return result.value


def contents(sm: StateMachine) -> Any:
    """The state without its index (a refused command still takes a log index)."""
    state = json.loads(sm.snapshot())
    del state["index"]
    return state


def test_create_with_a_subnet_and_the_default_gateway() -> None:
    m = Machine()
    net = m.apply(NetworkCreate("front", subnet="10.10.0.0/24"))
    assert (net["subnet"], net["gateway"], net["driver"]) == ("10.10.0.0/24", "10.10.0.1",
                                                               "bridge")
    net = m.apply(NetworkCreate("back", subnet="10.20.0.0/24", gateway="10.20.0.254",
                                internal=True))
    assert net["gateway"] == "10.20.0.254" and net["internal"] is True


def test_the_widest_and_the_highest_allowed_subnets() -> None:
    m = Machine()
    assert m.apply(NetworkCreate("wide", subnet="11.0.0.0/8"))["subnet"] == "11.0.0.0/8"
    assert m.apply(NetworkCreate("top", subnet="223.255.255.0/24"))["gateway"] == \
        "223.255.255.1"
    assert m.apply(NetworkCreate("near", subnet="126.255.255.0/24"))["subnet"]
    assert m.apply(ServiceCidrSet("100.64.0.0/16"))["cidr"] == "100.64.0.0/16"


def test_default_subnets_never_overlap() -> None:
    m = Machine()
    m.apply(NetworkCreate("mine", subnet="172.18.5.0/24"))  # inside the first default
    first = m.apply(NetworkCreate("a"))["subnet"]
    second = m.apply(NetworkCreate("b"))["subnet"]
    assert (first, second) == ("172.19.0.0/16", "172.20.0.0/16")


@pytest.mark.parametrize(("command", "error", "field", "words"), [
    (NetworkCreate("x", subnet="10.0.0.0/33"), ConfigError, "subnet", "not a network"),
    (NetworkCreate("x", subnet="10.0.0.1/24"), ConfigError, "subnet", "host bits"),
    (NetworkCreate("x", subnet="banana"), ConfigError, "subnet", "not a network"),
    (NetworkCreate("x", subnet="10.0.0.0/31"), ConfigError, "subnet", "too small"),
    (NetworkCreate("x", subnet="fd00::/64"), ConfigError, "subnet", "only IPv4"),
    (NetworkCreate("x", subnet="127.0.0.0/24"), ConfigError, "subnet", "loopback"),
    (NetworkCreate("x", subnet="126.0.0.0/7"), ConfigError, "subnet", "shortest prefix"),
    (NetworkCreate("x", subnet="0.0.0.0/0"), ConfigError, "subnet", "shortest prefix"),
    (NetworkCreate("x", subnet="169.254.8.0/24"), ConfigError, "subnet", "link-local"),
    (NetworkCreate("x", subnet="169.0.0.0/8"), ConfigError, "subnet", "link-local"),
    (NetworkCreate("x", subnet="224.0.0.0/24"), ConfigError, "subnet", "multicast"),
    (NetworkCreate("x", subnet="239.1.0.0/16"), ConfigError, "subnet", "multicast"),
    (NetworkCreate("x", subnet="0.0.0.0/30"), ConfigError, "subnet", "unspecified"),
    (NetworkCreate("x", subnet="255.255.255.0/24"), ConfigError, "subnet", "broadcast"),
    (NetworkCreate("x", subnet="240.0.0.0/8"), ConfigError, "subnet", "reserved"),
    (NetworkCreate("x", subnet=["10.0.0.0/24"]), ConfigError, "subnet",  # type: ignore[arg-type]
     "CIDR form"),
    (ServiceCidrSet("127.96.0.0/16"), ConfigError, "cidr", "loopback"),
    (ServiceCidrSet("224.0.0.0/8"), ConfigError, "cidr", "multicast"),
    (ServiceCidrSet("8.0.0.0/6"), ConfigError, "cidr", "shortest prefix"),
    (NetworkCreate("x", subnet="10.0.0.0/24", gateway="10.0.1.1"), ConfigError, "gateway",
     "not a host address"),
    (NetworkCreate("x", subnet="10.0.0.0/24", gateway="10.0.0.0"), ConfigError, "gateway",
     "not a host address"),
    (NetworkCreate("x", gateway="10.0.0.1"), ConfigError, "gateway", "give a subnet"),
    (NetworkCreate("x", driver="macvlan"), ConfigError, "driver", "not one of"),
    (NetworkCreate("x", driver="host", subnet="10.0.0.0/24"), ConfigError, "subnet",
     "no addresses"),
    (NetworkCreate("-x"), ConfigError, "name", "not a valid network name"),
    (NetworkCreate("x\n"), ConfigError, "name", "not a valid network name"),
    (AddressAssign("taken", "w\n"), ConfigError, "owner", "not a valid"),
    (NetworkCreate("taken"), Conflict, "name", "already exists"),
    (NetworkCreate("x", subnet="10.1.128.0/17"), Conflict, "subnet", "overlaps"),
    (NetworkDelete("nowhere"), NotFound, "name", "no network"),
    (NetworkDelete("taken"), Conflict, "name", "in use by web-1"),
    (AddressAssign("nowhere", "w"), NotFound, "network", "no network"),
    (AddressAssign("taken", "w", "10.1.0.1"), ConfigError, "address", "not a free host"),
    (AddressAssign("taken", "w", "10.1.0.2"), Conflict, "address", "already in use"),
    (AddressAssign("taken", "web-1", "10.1.0.9"), Conflict, "address", "already has"),
    (AddressAssign("hostnet", "w"), ConfigError, "network", "hands out no addresses"),
])
def test_bad_requests_are_refused_and_change_nothing(
        command: Command, error: type[MeshletError], field: str, words: str) -> None:
    m = Machine()
    m.apply(NetworkCreate("taken", subnet="10.1.0.0/16"))
    m.apply(NetworkCreate("hostnet", driver="host"))
    m.apply(AddressAssign("taken", "web-1"))
    assert_refused(m, command, error, field, words)


def assert_refused(m: Machine, command: Command, error: type[MeshletError], field: str,
                   words: str) -> None:
    """``command`` fails with ``error`` naming ``field``, and the state is unchanged."""
    before = contents(m.sm)
    with pytest.raises(error) as caught:
        m.apply(command)
    assert caught.value.field == field and words in str(caught.value)
    assert contents(m.sm) == before


def test_addresses_lowest_free_idempotent_released_and_exhausted() -> None:
    m = Machine()
    m.apply(NetworkCreate("tiny", subnet="10.9.0.0/29"))  # hosts .1-.6, gateway .1
    got = [m.apply(AddressAssign("tiny", f"w{i}"))["address"] for i in range(5)]
    assert got == [f"10.9.0.{i}" for i in range(2, 7)]
    again = m.apply(AddressAssign("tiny", "w0"))
    assert again == {"network": "tiny", "owner": "w0", "address": "10.9.0.2",
                     "prefix": 29, "gateway": "10.9.0.1"}
    with pytest.raises(Conflict, match="no free address"):
        m.apply(AddressAssign("tiny", "w5"))
    assert m.apply(AddressRelease("tiny", "w1")) is True
    assert m.apply(AddressRelease("tiny", "w1")) is False  # releasing twice is fine
    assert m.apply(AddressAssign("tiny", "w5"))["address"] == "10.9.0.3"
    for owner in ("w0", "w2", "w3", "w4", "w5"):
        m.apply(AddressRelease("tiny", owner))
    m.apply(NetworkDelete("tiny"))
    assert m.sm.networks.networks == {}


def test_an_internal_network_gives_no_gateway() -> None:
    m = Machine()
    m.apply(NetworkCreate("private", subnet="10.3.0.0/24", internal=True))
    assert m.apply(AddressAssign("private", "w"))["gateway"] is None


def test_snapshot_round_trip_keeps_networks_and_addresses() -> None:
    m = Machine()
    m.apply(NetworkCreate("front", subnet="10.10.0.0/24"))
    m.apply(AddressAssign("front", "a"))
    copy = StateMachine()
    copy.restore(m.sm.snapshot())
    assert copy.snapshot() == m.sm.snapshot()
    assert copy.networks.networks["front"].addresses == {"a": "10.10.0.2"}


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.booleans(), st.integers(0, 20)), max_size=80))
def test_no_address_is_ever_held_twice(steps: list[tuple[bool, int]]) -> None:
    m = Machine()
    m.apply(NetworkCreate("n", subnet="10.5.0.0/28"))  # 13 addresses besides the gateway
    for assign, owner in steps:
        try:
            if assign:
                m.apply(AddressAssign("n", f"w{owner}"))
            else:
                m.apply(AddressRelease("n", f"w{owner}"))
        except Conflict:
            assert len(m.sm.networks.networks["n"].addresses) == 13
        held = list(m.sm.networks.networks["n"].addresses.values())
        assert len(held) == len(set(held))
        assert all(ipaddress.IPv4Address(a) in ipaddress.IPv4Network("10.5.0.0/28")
                   and a != "10.5.0.1" for a in held)

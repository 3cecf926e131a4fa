"""The overlay's entries from the catalog, the nodes table, and overlay VXLAN ids."""

from __future__ import annotations

import json

import pytest

from meshlet.errors import ConfigError, NotFound
from meshlet.net.overlay_plan import Remote, host_owner, mac_for, mesh_owner, remotes
from meshlet.state.commands import NetworkCreate, NetworkDelete, NodeDeregister, NodeRegister
from tests.unit.test_networks import Machine, contents


def test_mac_is_derived_from_the_address() -> None:
    assert mac_for("10.0.0.2") == "02:42:0a:00:00:02"
    assert mac_for("172.31.255.254") == "02:42:ac:1f:ff:fe"


CONTAINERS = {name: {"node": node} for name, node in
              (("a", "h1"), ("b", "h2"), ("c", "h3"), ("d", "h2"), ("e", "gone"))}


def test_remotes_are_other_hosts_workloads_on_the_network_behind_their_host() -> None:
    overlay = {"a": "10.9.0.2", "b": "10.9.0.3", "c": "10.9.0.4", "e": "10.9.0.5",
               mesh_owner("h3", "catalog-0"): "10.9.0.6", "unknown": "10.9.0.7"}
    other = {"c": "10.8.0.2", "d": "10.8.0.3"}
    nodes = {"h1": "192.0.2.1", "h2": "192.0.2.2", "h3": "192.0.2.3"}
    assert remotes(overlay, CONTAINERS, nodes, "h1") == {
        Remote("10.9.0.3", "02:42:0a:09:00:03", "192.0.2.2"),
        Remote("10.9.0.4", "02:42:0a:09:00:04", "192.0.2.3"),
        Remote("10.9.0.6", "02:42:0a:09:00:06", "192.0.2.3")}
    # A host that left takes its workloads' entries with it.
    del nodes["h3"]
    assert remotes(overlay, CONTAINERS, nodes, "h1") == {
        Remote("10.9.0.3", "02:42:0a:09:00:03", "192.0.2.2")}
    assert remotes(other, CONTAINERS, nodes, "h2") == set()


def test_a_hosts_own_address_is_reached_behind_that_host() -> None:
    # What a host sends into the overlay from its own namespace comes from its own
    # address there (the gateway's is on every host): the others answer it through
    # that host's tunnel end.
    overlay = {host_owner("h2"): "10.9.0.8", host_owner("h1"): "10.9.0.9"}
    nodes = {"h1": "192.0.2.1", "h2": "192.0.2.2"}
    assert remotes(overlay, CONTAINERS, nodes, "h1") == {
        Remote("10.9.0.8", "02:42:0a:09:00:08", "192.0.2.2")}


def test_nodes_register_update_and_leave() -> None:
    m = Machine()
    assert m.apply(NodeRegister("h1", "192.0.2.1"))["address"] == "192.0.2.1"
    m.apply(NodeRegister("h1", "192.0.2.9"))
    assert m.sm.nodes.nodes["h1"].address == "192.0.2.9"
    m.apply(NodeDeregister("h1"))
    assert m.sm.nodes.nodes == {}


@pytest.mark.parametrize("command, error", [
    (NodeRegister("h1", "not-an-ip"), ConfigError),
    (NodeRegister("h1", "0.0.0.0"), ConfigError),
    (NodeRegister("h1", "224.0.0.1"), ConfigError),
    (NodeRegister("h1", "169.254.1.1"), ConfigError),
    (NodeRegister("h1", "255.255.255.255"), ConfigError),
    (NodeRegister("h1", "240.0.0.1"), ConfigError),
    (NodeRegister("h1", "0.0.0.1"), ConfigError),
    (NodeRegister("h1", "127.0.0.1"), ConfigError),  # h0 is at 192.0.2.1: no mixing
    (NodeRegister("bad name", "192.0.2.1"), ConfigError),
    (NodeRegister("h1\n", "192.0.2.1"), ConfigError),
    (NodeDeregister("nobody"), NotFound),
    (NodeRegister("h1", "192.0.2.2", metrics="192.0.2.2"), ConfigError),
    (NodeRegister("h1", "192.0.2.2", metrics="192.0.2.2:0"), ConfigError),
    (NodeRegister("h1", "192.0.2.2", metrics="192.0.2.2:65536"), ConfigError),
    (NodeRegister("h1", "192.0.2.2", metrics="host:9100"), ConfigError),
    (NodeRegister("h1", "192.0.2.2", metrics="0.0.0.0:9100"), ConfigError),
    (NodeRegister("h1", "192.0.2.2", metrics="224.0.0.1:9100"), ConfigError),
    (NodeRegister("h1", "192.0.2.2", metrics="192.0.2.2:+91"), ConfigError),
    (NodeRegister("h1", "192.0.2.2", metrics=9100), ConfigError),  # type: ignore[arg-type]
])
def test_bad_node_commands_change_nothing(command: object, error: type) -> None:
    m = Machine()
    m.apply(NodeRegister("h0", "192.0.2.1"))
    before = contents(m.sm)
    with pytest.raises(error):
        m.apply(command)  # type: ignore[arg-type]
    assert contents(m.sm) == before


def test_a_node_names_its_agents_metrics_address_and_a_change_of_it_is_a_change() -> None:
    m = Machine()
    m.apply(NodeRegister("h1", "192.0.2.1"))
    assert m.sm.nodes.nodes["h1"].metrics == ""
    m.apply(NodeRegister("h1", "192.0.2.1", metrics="192.0.2.1:9100"))
    node = m.sm.nodes.nodes["h1"]
    assert (node.metrics, node.modify_index) == ("192.0.2.1:9100", m.sm.nodes.index)
    moved = m.sm.nodes.index
    m.apply(NodeRegister("h1", "192.0.2.1", metrics="192.0.2.1:9100"))  # a heartbeat
    assert m.sm.nodes.index == moved


def test_loopback_nodes_and_reachable_nodes_never_mix() -> None:
    m = Machine()
    m.apply(NodeRegister("local", "127.0.0.1"))
    m.apply(NodeRegister("other", "127.0.0.2"))
    with pytest.raises(ConfigError, match=r"cannot join node 'local' at 127\.0\.0\.1") as info:
        m.apply(NodeRegister("h1", "192.0.2.1"))
    assert info.value.field == "address"
    m.apply(NodeDeregister("local"))
    m.apply(NodeRegister("other", "192.0.2.7"))  # the only node left may move
    with pytest.raises(ConfigError, match="all on one host's loopback"):
        m.apply(NodeRegister("local", "127.0.0.1"))


def test_overlay_networks_get_distinct_vnis_and_reuse_freed_ones() -> None:
    m = Machine()
    assert m.apply(NetworkCreate("a", "overlay"))["vni"] == 4096
    assert m.apply(NetworkCreate("b", "overlay"))["vni"] == 4097
    assert m.apply(NetworkCreate("c", "bridge"))["vni"] is None
    m.apply(NetworkDelete("a"))
    assert m.apply(NetworkCreate("d", "overlay"))["vni"] == 4096


def test_nodes_survive_a_snapshot() -> None:
    m = Machine()
    m.apply(NodeRegister("h1", "192.0.2.1"))
    restored = Machine()
    restored.sm.restore(m.sm.snapshot())
    assert json.loads(restored.sm.snapshot()) == json.loads(m.sm.snapshot())

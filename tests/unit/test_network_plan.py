"""The pure side of a host's networks: the link operations that take a sandbox's
interfaces where they should be (``agent/network_plan.py``), and what the host's view
of the cluster answers (``agent/cluster_view.py``)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import replace
from pathlib import Path

import pytest

from meshlet.agent import cluster_view, network_plan
from meshlet.agent.cluster_view import ClusterView
from meshlet.agent.network_plan import (
    Attach,
    Detach,
    EnsureBridge,
    EnsureTunnel,
    Interface,
    Network,
    Op,
    RemoveNetwork,
    Underlay,
    describe,
    plan,
)
from meshlet.net.dns import Records
from meshlet.net.overlay_plan import Remote, mac_for
from tests.unit.test_pure_modules import BANNED, imported_modules

FRONT = Network("front", "bridge", 24, "10.40.0.1", None)
BACK = Network("back", "bridge", 24, "10.41.0.1", None)
VAULT = Network("vault", "bridge", 24, None, None)            # internal
WIDE = Network("wide", "overlay", 16, "10.50.0.1", 4242)
NETWORKS = {n.name: n for n in (FRONT, BACK, VAULT, WIDE)}
UNDERLAY = Underlay("192.168.1.5", 1450)


def attached(ops: Sequence[Op], have: Sequence[Interface] = ()) -> list[Interface]:
    """The interfaces after ``ops``, as the host records them."""
    now = list(have)
    for op in ops:
        if isinstance(op, Attach):
            now.append(op.interface)
        elif isinstance(op, Detach):
            now = [i for i in now if i.network != op.network]
    return now


def plan_for(want: Mapping[str, str], have: Sequence[Interface] = (),
             others: Sequence[str] = (), underlay: Underlay | None = None) -> list[Op]:
    return plan("web", "ml-x-web", have, want, NETWORKS, set(others), underlay)


def test_a_first_interface_gets_the_bridge_then_the_veth_and_the_default_route() -> None:
    assert plan_for({"front": "10.40.0.2"}) == [
        EnsureBridge("front", "10.40.0.1", 24),
        Attach("front", "web", "ml-x-web", Interface("front", "eth0"), "10.40.0.2", 24,
               "10.40.0.1", mac_for("10.40.0.2"), None)]


def test_further_interfaces_take_the_next_name_and_no_default_route() -> None:
    ops = plan_for({"front": "10.40.0.2", "back": "10.41.0.2"})
    attaches = [op for op in ops if isinstance(op, Attach)]
    assert [(a.interface.ifname, a.gateway) for a in attaches] == [
        ("eth0", "10.40.0.1"), ("eth1", None)]


def test_an_internal_network_has_no_gateway_on_its_bridge_nor_a_route() -> None:
    ops = plan_for({"vault": "10.42.0.2"})
    assert ops[0] == EnsureBridge("vault", None, 24)
    assert isinstance(ops[1], Attach) and ops[1].gateway is None


def test_an_overlay_gets_its_tunnel_before_the_veth_and_the_underlay_mtu() -> None:
    ops = plan_for({"wide": "10.50.0.9"}, underlay=UNDERLAY)
    assert ops[:2] == [EnsureBridge("wide", "10.50.0.1", 16),
                       EnsureTunnel("wide", 4242, "192.168.1.5", 1450)]
    assert isinstance(ops[2], Attach) and ops[2].mtu == 1450
    # On loopback only, an overlay is a bridge network of this host alone.
    alone = plan_for({"wide": "10.50.0.9"})
    assert [type(op) for op in alone] == [EnsureBridge, Attach]
    assert isinstance(alone[1], Attach) and alone[1].mtu is None


def test_an_overlays_bridge_holds_the_hosts_own_address_where_it_has_a_tunnel() -> None:
    held = {**NETWORKS, "wide": replace(WIDE, local="10.50.0.3")}
    ops = plan("web", "ml-x-web", (), {"wide": "10.50.0.9"}, held, set(), UNDERLAY)
    assert ops[0] == EnsureBridge("wide", "10.50.0.1", 16, "10.50.0.3")
    # On loopback only, no other host answers: the gateway's address will do.
    alone = plan("web", "ml-x-web", (), {"wide": "10.50.0.9"}, held, set(), None)
    assert alone[0] == EnsureBridge("wide", "10.50.0.1", 16)


def test_what_is_in_place_is_planned_again_as_nothing() -> None:
    want = {"front": "10.40.0.2", "wide": "10.50.0.9"}
    ops = plan_for(want, underlay=UNDERLAY)
    assert plan_for(want, attached(ops), underlay=UNDERLAY) == []


def test_rewiring_detaches_first_and_fills_the_freed_name() -> None:
    have = [Interface("front", "eth0"), Interface("back", "eth1")]
    ops = plan_for({"back": "10.41.0.2", "vault": "10.42.0.2"}, have)
    assert ops[:2] == [Detach("front", "web"), RemoveNetwork("front")]
    attach = ops[-1]
    assert isinstance(attach, Attach)
    assert (attach.network, attach.interface.ifname, attach.gateway) == ("vault", "eth0", None)
    assert [i.network for i in attached(ops, have)] == ["back", "vault"]


def test_teardown_keeps_the_bridges_other_sandboxes_are_on() -> None:
    have = [Interface("front", "eth0"), Interface("back", "eth1")]
    assert plan_for({}, have, others=["back"]) == [
        Detach("front", "web"), Detach("back", "web"), RemoveNetwork("front")]
    assert plan_for({}) == []


def test_each_operation_says_what_it_does() -> None:
    have = [Interface("front", "eth0")]
    ops = [*plan_for({}, have), *plan_for({"wide": "10.50.0.9"}, underlay=UNDERLAY)]
    assert [describe(op) for op in ops] == [
        "detach 'web' from network 'front'", "remove the bridge of network 'front'",
        "make the bridge of network 'wide'", "make the tunnel of network 'wide'",
        "attach 'web' to network 'wide'"]


def test_a_network_without_its_record_is_a_caller_error() -> None:
    with pytest.raises(KeyError):
        plan_for({"nowhere": "10.9.0.2"})


def test_network_from_its_record() -> None:
    record = {"name": "vault", "driver": "bridge", "subnet": "10.42.0.0/24",
              "gateway": "10.42.0.1", "internal": True, "vni": None, "addresses": {}}
    assert Network.from_record(record) == VAULT
    wide = {**record, "name": "wide", "driver": "overlay", "subnet": "10.50.0.0/16",
            "gateway": "10.50.0.1", "internal": False, "vni": 4242}
    assert Network.from_record(wide) == WIDE


def view() -> ClusterView:
    v = ClusterView("n1")
    v.set_networks([
        {"name": "wide", "driver": "overlay", "addresses": {
            "web": "10.50.0.2", "db": "10.50.0.3", "svc:n2:api-0": "10.50.0.4",
            "svc:gone:old-0": "10.50.0.5"}},
        {"name": "front", "driver": "bridge", "addresses": {"web": "10.40.0.2"}}])
    v.set_containers([
        {"name": "web", "node": "n1", "networks": ["wide", "front"],
         "addresses": {"wide": "10.50.0.2", "front": "10.40.0.2"}},
        {"name": "db", "node": "n2", "networks": ["wide"], "addresses": {"wide": "10.50.0.3"}}])
    v.set_nodes([{"name": "n1", "address": "192.168.1.5"},
                 {"name": "n2", "address": "192.168.1.6"}])
    v.set_vips([{"service": "catalog", "vip": "10.99.0.2", "ports": [80]}])
    return v


def test_the_view_gives_overlays_the_workloads_of_other_registered_hosts() -> None:
    entries = view().overlays({"wide", "front", "unknown"})
    assert entries == {"wide": {Remote("10.50.0.3", mac_for("10.50.0.3"), "192.168.1.6"),
                                Remote("10.50.0.4", mac_for("10.50.0.4"), "192.168.1.6")}}


def test_the_view_answers_names_as_the_asker_sees_them() -> None:
    v = view()
    web = v.lookup(lambda: v.containers.get("web"))
    assert web("db") == Records(("10.50.0.3",))
    assert web("api-0.wide") == Records(("10.50.0.4",))
    assert web("catalog") == Records(("10.99.0.2",))
    assert v.lookup(lambda: v.containers.get("not-yet"))("db") is None  # no record yet


def test_the_plan_and_the_view_do_no_io() -> None:
    for module in (network_plan, cluster_view):
        assert module.__file__ is not None
        assert imported_modules(Path(module.__file__)) & {*BANNED, "pyroute2"} == set()


def test_an_attach_that_failed_part_way_is_detached_and_made_again() -> None:
    have = [Interface("front", "eth0"), Interface("back", "eth1")]
    ops = plan("web", "ml-x-web", have, {"front": "10.40.0.2", "back": "10.41.0.2"},
               NETWORKS, set(), None, unfinished={"back"})
    assert ops[0] == Detach("back", "web")
    assert not any(isinstance(op, RemoveNetwork) for op in ops)  # still wanted: kept
    assert attached(ops, have) == have  # eth1 again, after eth0
    gone = plan("web", "ml-x-web", have, {"front": "10.40.0.2"}, NETWORKS, set(), None,
                unfinished={"back"})
    assert gone == [Detach("back", "web"), RemoveNetwork("back")]

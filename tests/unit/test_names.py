"""What a workload resolves: containers on shared networks, services' virtual IPs,
SRV records for services' ports; and services' virtual IPs in the state machine."""

from __future__ import annotations

import pytest

from meshlet.errors import ConfigError, Conflict
from meshlet.net.dns import Records, Srv
from meshlet.net.names import directory, resolve
from meshlet.state.commands import (
    DeregisterInstance,
    NetworkCreate,
    RegisterInstance,
    ServiceCidrSet,
)
from tests.unit.test_networks import Machine, contents

CONTAINERS = {
    "client": {"networks": ["front"], "addresses": {"front": "10.1.0.3"}},
    "web": {"networks": ["front", "back"],
            "addresses": {"front": "10.1.0.2", "back": "10.2.0.2"}},
    "db": {"networks": ["back"], "addresses": {"back": "10.2.0.3"}},
    "catalog": {"networks": ["back"], "addresses": {"back": "10.2.0.4"}},
}
VIPS = {"catalog": {"vip": "10.96.0.2", "ports": [80]},
        "pricing": {"vip": "10.96.0.3", "ports": [8000, 8001]}}


def ask(name: str, asker: str = "client") -> Records | None:
    me = CONTAINERS.get(asker, {"networks": ["elsewhere"], "addresses": {}})
    return resolve(name, me, CONTAINERS, VIPS)


def test_containers_on_a_shared_network_resolve_to_their_address_there() -> None:
    assert ask("web") == Records(("10.1.0.2",))
    assert ask("web.front") == Records(("10.1.0.2",))
    assert ask("web", asker="db") == Records(("10.2.0.2",))
    assert ask("web.back") is None     # the asker is not on back
    assert ask("db") is None           # no shared network


def test_services_resolve_to_their_virtual_ip_and_srv_gives_ports() -> None:
    assert ask("pricing") == Records(("10.96.0.3",))
    assert ask("pricing.service") == Records(("10.96.0.3",))
    assert ask("_pricing._tcp") == Records(srv=(Srv(8000, "pricing"), Srv(8001, "pricing")))
    assert ask("_pricing._tcp.service") == ask("_pricing._tcp")
    assert ask("_pricing._udp") is None and ask("_nothing._tcp") is None
    assert ask("nothing") is None and ask("pricing.other") is None


def test_a_container_name_wins_over_a_service_of_the_same_name() -> None:
    assert ask("catalog", asker="db") == Records(("10.2.0.4",))
    assert ask("catalog") == Records(("10.96.0.2",))   # not shared: the service
    assert ask("catalog", asker="stranger") == Records(("10.96.0.2",))


def register(m: Machine, instance: str, service: str, port: int = 80) -> None:
    m.apply(RegisterInstance(instance, service, "127.0.0.1", port))


def test_services_get_virtual_ips_while_they_have_instances() -> None:
    m = Machine()
    register(m, "a-0", "a")
    register(m, "a-1", "a")
    register(m, "b-0", "b")
    assert m.sm.vips.vips == {"a": "10.96.0.2", "b": "10.96.0.3"}
    m.apply(DeregisterInstance("a-0"))
    assert m.sm.vips.vips["a"] == "10.96.0.2"   # kept while one instance is left
    m.apply(DeregisterInstance("a-1"))
    assert m.sm.vips.vips == {"b": "10.96.0.3"}
    register(m, "c-0", "c")
    assert m.sm.vips.vips["c"] == "10.96.0.2"   # the lowest free address again


def test_changing_the_cidr_renumbers_in_name_order() -> None:
    m = Machine()
    register(m, "z-0", "z")
    register(m, "a-0", "a")
    m.apply(ServiceCidrSet("10.200.0.0/24"))
    assert m.sm.vips.vips == {"a": "10.200.0.2", "z": "10.200.0.3"}


@pytest.mark.parametrize("cidr, error", [
    ("nonsense", ConfigError), ("10.96.0.1/16", ConfigError), ("10.50.0.0/24", Conflict),
    ("10.200.0.0/30", Conflict)])
def test_bad_service_cidrs_change_nothing(cidr: str, error: type) -> None:
    m = Machine()
    m.apply(NetworkCreate("net", "bridge", "10.50.0.0/16"))
    register(m, "a-0", "a")
    register(m, "b-0", "b")
    before = contents(m.sm)
    with pytest.raises(error):
        m.apply(ServiceCidrSet(cidr))
    assert contents(m.sm) == before


def test_networks_keep_clear_of_the_service_cidr() -> None:
    m = Machine()
    with pytest.raises(Conflict, match="service CIDR"):
        m.apply(NetworkCreate("net", "bridge", "10.96.5.0/24"))
    m.apply(ServiceCidrSet("172.18.0.0/16"))
    # The first default pool is now the service CIDR's, so the next one is taken.
    assert m.apply(NetworkCreate("net", "bridge"))["subnet"] == "172.19.0.0/16"


def test_mesh_workloads_are_named_by_instance_and_containers_win_a_shared_name() -> None:
    networks = [{"name": "shop", "addresses": {"svc:h1:catalog-0": "10.5.0.2",
                                               "svc:h2:web": "10.5.0.3", "web": "10.5.0.4"}},
                {"name": "back", "addresses": {"svc:h1:catalog-0": "10.6.0.2"}}]
    containers = {"web": {"networks": ["shop"], "addresses": {"shop": "10.5.0.4"}}}
    found = directory(containers, networks)
    assert found["catalog-0"] == {"networks": ["shop", "back"],
                                  "addresses": {"shop": "10.5.0.2", "back": "10.6.0.2"}}
    assert found["web"] == containers["web"]
    me = {"networks": ["shop"], "addresses": {"shop": "10.5.0.9"}}
    assert resolve("catalog-0", me, found, {}) == Records(("10.5.0.2",))

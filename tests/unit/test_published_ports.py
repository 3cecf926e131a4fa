"""Which host ports NodePort and LoadBalancer Services publish on every node."""

from __future__ import annotations

from typing import Any

from meshlet.deploy.published import NODE_PORTS, Published, port_protocol, published_ports


def service(name: str, kind: str, *ports: dict[str, Any]) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Service", "metadata": {"name": name},
            "spec": {"type": kind, "selector": {"app": name}, "ports": list(ports)}}


def test_a_load_balancer_publishes_its_port_and_a_node_port() -> None:
    found = published_ports([service("web", "LoadBalancer", {"port": 80, "targetPort": 8080})])
    assert [p.host_port for p in found if p.host_port == 80] == [80]
    node_ports = [p for p in found if p.host_port != 80]
    assert len(node_ports) == 1 and node_ports[0].host_port in NODE_PORTS
    assert all(p.service == "web" and p.port == 80 and p.protocol == "http" for p in found)


def test_cluster_ip_publishes_nothing() -> None:
    assert published_ports([service("db", "ClusterIP", {"port": 5432})]) == []


def test_an_explicit_node_port_is_kept_and_never_chosen_for_another() -> None:
    explicit = service("b", "NodePort", {"port": 80, "nodePort": 30080})
    found = published_ports([service("a", "NodePort", {"port": 80}), explicit])
    ports = {p.service: p.host_port for p in found}
    assert ports["b"] == 30080 and ports["a"] != 30080


def test_every_node_chooses_the_same_ports_and_a_later_service_moves_none() -> None:
    first = [service("a", "NodePort", {"port": 80}), service("b", "NodePort", {"port": 81})]
    before = {p.service: p.host_port for p in published_ports(first)}
    assert before == {p.service: p.host_port for p in published_ports(first)}
    after = published_ports([*first, service("c", "NodePort", {"port": 82})])
    assert {p.service: p.host_port for p in after if p.service != "c"} == before


def test_two_services_on_one_load_balancer_port_the_earlier_keeps_it() -> None:
    found = published_ports([service("a", "LoadBalancer", {"port": 80}),
                             service("b", "LoadBalancer", {"port": 80})])
    assert [p.service for p in found if p.host_port == 80] == ["a"]


def test_port_names_say_the_protocol_as_istio_reads_them() -> None:
    assert [port_protocol(n) for n in (None, "http", "tcp", "tcp-db", "tcpx", "grpc",
                                       "grpc-web", "http2-api", "http2x")] == \
        ["http", "http", "tcp", "tcp", "http", "grpc", "grpc", "http2", "http"]
    found = published_ports([service("db", "NodePort",
                                      {"port": 5432, "name": "tcp-pg", "nodePort": 30432})])
    assert found == [Published(30432, "db", 5432, "tcp")]

"""The embedded DNS's answers: known names, unknown names, other record types, and
no recursion."""

from __future__ import annotations

import dns.flags
import dns.message
import dns.rcode
import dns.rdatatype

from meshlet.net.dns import Records, Srv, answer

NAMES = {"web": Records(("10.1.0.2",)), "web.front": Records(("10.1.0.2",)),
         "catalog": Records(("10.96.0.2",)),
         "_catalog._tcp": Records(srv=(Srv(80, "catalog"), Srv(8080, "catalog"))),
         "many": Records(tuple(f"10.3.0.{i}" for i in range(1, 101)))}


def ask(name: str, rdtype: str = "A") -> dns.message.Message:
    query = dns.message.make_query(name, rdtype)  # recursion desired, as stubs ask
    wire = answer(query.to_wire(), NAMES.get)
    assert wire is not None
    response = dns.message.from_wire(wire)
    assert response.id == query.id
    assert not response.flags & dns.flags.RA  # never recurses to the outside
    return response


def test_a_known_name_gets_its_address() -> None:
    response = ask("web")
    assert response.rcode() == dns.rcode.NOERROR and response.flags & dns.flags.AA
    assert [r.address for r in response.answer[0]] == ["10.1.0.2"]
    assert [r.address for r in ask("WEB.front.").answer[0]] == ["10.1.0.2"]


def test_unknown_names_are_nxdomain_and_never_forwarded() -> None:
    assert ask("example.com").rcode() == dns.rcode.NXDOMAIN
    assert ask("db").rcode() == dns.rcode.NXDOMAIN


def test_other_types_of_a_known_name_are_empty() -> None:
    response = ask("web", "AAAA")
    assert response.rcode() == dns.rcode.NOERROR and response.answer == []


def test_srv_gives_ports_and_the_targets_address_in_the_additional_section() -> None:
    response = ask("_catalog._tcp", "SRV")
    assert response.rcode() == dns.rcode.NOERROR
    assert sorted((r.port, r.target.to_text()) for r in response.answer[0]) == [
        (80, "catalog."), (8080, "catalog.")]
    assert [r.address for r in response.additional[0]] == ["10.96.0.2"]
    assert ask("_catalog._tcp", "A").answer == []   # a known name, no A record


def test_garbage_and_responses_are_ignored() -> None:
    assert answer(b"\x00\x01garbage", NAMES.get) is None
    reply = dns.message.make_response(dns.message.make_query("web", "A"))
    assert answer(reply.to_wire(), NAMES.get) is None


def test_an_answer_too_big_for_udp_is_truncated_and_whole_over_tcp() -> None:
    query = dns.message.make_query("many", "A")
    udp = dns.message.from_wire(answer(query.to_wire(), NAMES.get) or b"")
    assert udp.flags & dns.flags.TC and udp.answer == []
    tcp = dns.message.from_wire(answer(query.to_wire(), NAMES.get, tcp=True) or b"")
    assert not tcp.flags & dns.flags.TC and len(tcp.answer[0]) == 100
    # An EDNS asker with room for it gets it all over UDP.
    edns = dns.message.make_query("many", "A", use_edns=0, payload=4096)
    big = dns.message.from_wire(answer(edns.to_wire(), NAMES.get) or b"")
    assert not big.flags & dns.flags.TC and len(big.answer[0]) == 100

"""The embedded DNS server's answers, pure: a query in wire format and a lookup
function in, a response in wire format out.

It answers only for the names meshlet knows (``net/names.py`` says which): A records
with their addresses, SRV records with the ports a service is reached on (and the
target's address in the additional section, so one query suffices), an empty answer
for other types of a known name, NXDOMAIN for any other name. It never recurses to
the outside, and says so (RA clear), as Docker's embedded DNS does for its own names.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import dns.exception
import dns.flags
import dns.message
import dns.name
import dns.rcode
import dns.rdataclass
import dns.rdatatype
import dns.rrset

TTL = 5


@dataclass(frozen=True)
class Srv:
    port: int
    target: str   # a name this server answers A records for
    weight: int = 1


@dataclass(frozen=True)
class Records:
    """What a known name holds."""

    addresses: tuple[str, ...] = ()
    srv: tuple[Srv, ...] = ()


Lookup = Callable[[str], Records | None]  # name (lower case, no final dot) -> records


UDP_SIZE = 512      # without EDNS (RFC 1035)
TCP_SIZE = 65535


def answer(query_wire: bytes, lookup: Lookup, tcp: bool = False) -> bytes | None:
    """The response to ``query_wire``; None for a packet that is not a DNS query.
    Over UDP an answer too big for the asker (512 bytes, or its EDNS size) is sent
    empty with TC set, so the resolver asks again over TCP."""
    try:
        query = dns.message.from_wire(query_wire)
    except (dns.exception.DNSException, ValueError):
        return None
    if query.flags & dns.flags.QR:
        return None
    response = dns.message.make_response(query, recursion_available=False)
    response.flags &= ~dns.flags.RA
    if len(query.question) != 1:
        response.set_rcode(dns.rcode.FORMERR)
        return response.to_wire()
    question = query.question[0]
    name = question.name.to_text(omit_final_dot=True).lower()
    records = lookup(name)
    if records is None:
        response.set_rcode(dns.rcode.NXDOMAIN)
        return response.to_wire()
    fill(response, question, records, lookup)
    limit = TCP_SIZE if tcp else max(UDP_SIZE, query.payload if query.edns >= 0 else 0)
    try:
        return response.to_wire(max_size=limit)
    except dns.exception.TooBig:
        response.answer.clear()
        response.additional.clear()
        response.flags |= dns.flags.TC
        return response.to_wire()


def fill(response: dns.message.Message, question: dns.rrset.RRset, records: Records,
         lookup: Lookup) -> None:
    response.flags |= dns.flags.AA
    wants = (question.rdtype, dns.rdatatype.ANY)
    if dns.rdatatype.A in wants and records.addresses:
        response.answer.append(a_records(question.name, records.addresses))
    if dns.rdatatype.SRV in wants and records.srv:
        response.answer.append(dns.rrset.from_text_list(
            question.name, TTL, dns.rdataclass.IN, dns.rdatatype.SRV,
            [f"0 {s.weight} {s.port} {s.target}." for s in records.srv]))
        for target in sorted({s.target for s in records.srv}):
            held = lookup(target)
            if held is not None and held.addresses:
                response.additional.append(a_records(dns.name.from_text(target),
                                                     held.addresses))


def a_records(name: dns.name.Name, addresses: tuple[str, ...]) -> dns.rrset.RRset:
    return dns.rrset.from_text_list(name, TTL, dns.rdataclass.IN, dns.rdatatype.A,
                                    list(addresses))

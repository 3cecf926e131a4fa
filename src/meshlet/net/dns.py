"""The embedded DNS server's answers, pure: a query in wire format and a lookup
function in, a response in wire format out.

It answers only for the names meshlet knows (containers on the networks the asker
shares with them): A records with their addresses, an empty answer for other types
of a known name, NXDOMAIN for any other name. It never recurses to the outside, and
says so (RA clear), as Docker's embedded DNS does for its own names.
"""

from __future__ import annotations

from collections.abc import Callable

import dns.exception
import dns.flags
import dns.message
import dns.name
import dns.rcode
import dns.rdataclass
import dns.rdatatype
import dns.rrset

TTL = 5
Lookup = Callable[[str], list[str] | None]  # name -> IPv4 addresses, None if unknown


def answer(query_wire: bytes, lookup: Lookup) -> bytes | None:
    """The response to ``query_wire``; None for a packet that is not a DNS query."""
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
    addresses = lookup(name)
    if addresses is None:
        response.set_rcode(dns.rcode.NXDOMAIN)
        return response.to_wire()
    response.flags |= dns.flags.AA
    if question.rdtype in (dns.rdatatype.A, dns.rdatatype.ANY) and addresses:
        response.answer.append(dns.rrset.from_text_list(
            question.name, TTL, dns.rdataclass.IN, dns.rdatatype.A, addresses))
    return response.to_wire()

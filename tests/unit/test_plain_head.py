"""The sidecar's plain-message reader takes only what httptools reads the same way."""

from __future__ import annotations

import random
from collections.abc import Iterator

import httptools
import pytest

from meshlet.http_limits import MAX_HEAD_BYTES, MAX_HEADERS, MAX_URL_BYTES
from meshlet.proxy import plain_head
from meshlet.proxy.headers import (
    HAS_HOP_BY_HOP,
    HAS_HOST,
    connection_listed,
    forward_headers,
    header_flags,
)
from meshlet.proxy.plain_head import plain_request
from meshlet.proxy.upgrade import upgrade_head


def plain_response(data: bytes) -> tuple[int, bool] | None:
    """(status, keep-alive), or None, from plain_head's ``status << 1 | keep-alive``."""
    found = plain_head.plain_response(data)
    return (found >> 1, bool(found & 1)) if found else None


class Collect:
    """httptools callbacks that keep what a request or response was read as, and its
    keep-alive where the sidecar asks for it (a request's at its head's end, a
    response's at its end: after the message the parser has forgotten it)."""

    def __init__(self) -> None:
        self.parser: httptools.HttpRequestParser | httptools.HttpResponseParser | None = None
        self.keep_alive_at_head = False
        self.keep_alive_at_end = False
        self.url = b""
        self.headers: list[tuple[bytes, bytes]] = []
        self.body = b""
        self.complete = 0

    def on_url(self, url: bytes) -> None:
        self.url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers.append((name, value))

    def on_headers_complete(self) -> None:
        assert self.parser is not None
        self.keep_alive_at_head = self.parser.should_keep_alive()

    def on_body(self, body: bytes) -> None:
        self.body += body

    def on_message_complete(self) -> None:
        assert self.parser is not None
        self.keep_alive_at_end = self.parser.should_keep_alive()
        self.complete += 1


def by_httptools(data: bytes) -> tuple[bytes, bytes, list[tuple[bytes, bytes]], bool, str] | None:
    seen = Collect()
    parser = seen.parser = httptools.HttpRequestParser(seen)
    try:
        parser.feed_data(data)
    except httptools.HttpParserError:
        return None
    if seen.complete != 1 or seen.body:
        return None
    return (parser.get_method(), seen.url, seen.headers, seen.keep_alive_at_head,
            parser.get_http_version())


PLAIN = [
    b"GET / HTTP/1.1\r\nHost: a\r\n\r\n",
    b"GET /a?b=c&d HTTP/1.1\r\nHost: example\r\nUser-Agent: x/1\r\nAccept: */*\r\n\r\n",
    b"HEAD /h HTTP/1.1\r\nhost: a\r\nX-Empty:\r\nX-Spaces:   v  w \t\r\n\r\n",
    b"GET /ten HTTP/1.0\r\nConnection: keep-alive\r\nHost: a\r\n\r\n",
    b"GET /ten HTTP/1.0\r\n\r\n",
    b"GET /c HTTP/1.1\r\nConnection: close\r\nHost: a\r\n\r\n",
    b"DELETE /x HTTP/1.1\r\nHost: a\r\nConnection: Keep-Alive, close\r\n\r\n",
    b"POST /nobody HTTP/1.1\r\nHost: a\r\nX-Obs: caf\xc3\xa9\r\n\r\n",
    b"GET /t HTTP/1.1\r\nHost: a\r\ntraceparent: 00-0af7651916cd43dd8448eb211c80319c-"
    b"b7ad6b7169203331-01\r\n\r\n",
]

NOT_PLAIN = [
    b"GET / HTTP/1.1\r\nHost: a\r\n",  # incomplete
    b"GET / HTTP/1.1\r\nHost: a\r\n\r\nGET / HTTP/1.1\r\nHost: a\r\n\r\n",  # pipelined
    b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 2\r\n\r\nhi",
    b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\n\r\n",
    b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: a\r\nConnection: keep-alive, x-other\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\nConnection: close\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: a\r\nTE: trailers\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n",
    b"CONNECT a:443 HTTP/1.1\r\nHost: a\r\n\r\n",
    b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
    b"OPTIONS * HTTP/1.1\r\nHost: a\r\n\r\n",
    b"GET http://a/b HTTP/1.1\r\nHost: a\r\n\r\n",
    b"GET /a\x80 HTTP/1.1\r\nHost: a\r\n\r\n",
    b"GET  / HTTP/1.1\r\nHost: a\r\n\r\n",
    b"GET / HTTP/1.2\r\nHost: a\r\n\r\n",
    b"GET /\r\n\r\n",
    b"get / HTTP/1.1\r\nHost: a\r\n\r\n",
    b"GET / HTTP/1.1\r\nHo st: a\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost : a\r\n\r\n",
    b"GET / HTTP/1.1\r\n: a\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: a\x01b\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: a\x7f\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: a\rb\r\n\r\n",
    b"GET / HTTP/1.1\nHost: a\r\n\r\n",
    b"GET / HTTP/1.1\r\nX-Fold: a\r\n b\r\n\r\n",
]


@pytest.mark.parametrize("data", PLAIN)
def test_a_plain_request_reads_as_httptools_reads_it(data: bytes) -> None:
    plain = plain_request(data)
    assert plain is not None
    method, url, headers, flags, keep_alive, version = plain
    assert (method, url, headers, keep_alive, version) == by_httptools(data)
    expected = 0
    for name, value in headers:
        expected |= header_flags(name, value)
    assert flags == expected


@pytest.mark.parametrize("data", NOT_PLAIN)
def test_what_is_not_plain_is_left_to_httptools(data: bytes) -> None:
    assert plain_request(data) is None


def test_the_limits_are_left_to_the_parser_to_refuse() -> None:
    long_url = b"GET /" + b"a" * MAX_URL_BYTES + b" HTTP/1.1\r\nHost: a\r\n\r\n"
    many = b"GET / HTTP/1.1\r\n" + b"".join(b"X-%d: v\r\n" % i
                                            for i in range(MAX_HEADERS + 1)) + b"\r\n"
    big = b"GET / HTTP/1.1\r\n" + b"X-Big: " + b"v" * MAX_HEAD_BYTES + b"\r\n\r\n"
    for data in (long_url, many, big):
        assert plain_request(data) is None
    at_limit = b"GET / HTTP/1.1\r\n" + b"".join(b"X-%d: v\r\n" % i
                                                for i in range(MAX_HEADERS)) + b"\r\n"
    assert plain_request(at_limit) is not None


def test_connection_and_hop_by_hop_flags() -> None:
    plain = plain_request(b"GET / HTTP/1.1\r\nConnection: close\r\nHost: a\r\n\r\n")
    assert plain is not None
    assert plain[3] & HAS_HOP_BY_HOP and plain[3] & HAS_HOST and plain[4] is False


def test_names_a_connection_header_lists_are_not_forwarded() -> None:
    headers = [(b"Host", b"a"), (b"Connection", b"close, X-Hop ,, Upgrade"),
               (b"x-hop", b"1"), (b"Upgrade", b"websocket"), (b"Keep-Alive", b"timeout=5"),
               (b"X-Kept", b"2")]
    assert connection_listed(headers) == {b"close", b"x-hop", b"upgrade"}
    parts: list[bytes] = []
    forward_headers(parts, headers, flags=HAS_HOP_BY_HOP)
    assert b"".join(parts) == b"Host: a\r\nX-Kept: 2\r\n"
    head = upgrade_head(b"GET", b"/ws", headers, b"a")
    assert head == (b"GET /ws HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\nX-Kept: 2\r\n"
                    b"connection: upgrade\r\n\r\n")


def mutants(seeds: list[bytes], alphabet: bytes, most: int, seed: int) -> Iterator[bytes]:
    """20,000 of ``seeds`` with 1 to ``most`` bytes replaced or inserted at random."""
    rng = random.Random(seed)
    for _ in range(20000):
        data = bytearray(rng.choice(seeds))
        for _ in range(rng.randint(1, most)):
            i = rng.randrange(len(data))
            if rng.random() < 0.5:
                data[i] = rng.choice(alphabet)
            else:
                data.insert(i, rng.choice(alphabet))
        yield bytes(data)


def test_mutated_requests_never_read_otherwise_than_httptools() -> None:
    """Random bytes flipped in plain requests: whatever plain_request still takes,
    httptools reads the same way."""
    alphabet = b" :\r\n\t\x00\x7f\x80,;=/?#%Aa0-_" + bytes(range(0x21, 0x7f, 7))
    taken = 0
    for data in mutants(PLAIN, alphabet, 3, 7):
        plain = plain_request(data)
        if plain is not None:
            taken += 1
            method, url, headers, _, keep_alive, version = plain
            assert by_httptools(data) == (method, url, headers, keep_alive, version), data
    assert taken > 1000  # the mutations left many plain: the comparison was made


def response_by_httptools(data: bytes) -> tuple[int, bool] | None:
    seen = Collect()
    parser = seen.parser = httptools.HttpResponseParser(seen)
    try:
        parser.feed_data(data)
    except httptools.HttpParserError:
        return None
    if seen.complete != 1:
        return None
    return parser.get_status_code(), seen.keep_alive_at_end


PLAIN_RESPONSES = [
    b"HTTP/1.1 200 OK\r\nServer: nginx\r\nContent-Length: 5\r\n\r\nhello",
    b"HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\n\r\n",
    b"HTTP/1.1 503 \r\nContent-Length: 2\r\nConnection: close\r\n\r\nno",
    b"HTTP/1.1 200 OK\r\nConnection: Keep-Alive\r\nContent-Length: 3\r\n\r\nabc",
]

NOT_PLAIN_RESPONSES = [
    b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhell",  # body still coming
    b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello!",  # more than the body
    b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
    b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\nhello",
    b"HTTP/1.1 200 OK\r\nContent-Length: +5\r\n\r\nhello",
    b"HTTP/1.1 200 OK\r\nContent-Length: " + b"9" * 40 + b"\r\n\r\nhello",
    b"HTTP/1.1 200 OK\r\n\r\nuntil close",
    b"HTTP/1.1 100 Continue\r\n\r\n",
    b"HTTP/1.1 204 No Content\r\nContent-Length: 0\r\n\r\n",
    b"HTTP/1.1 304 Not Modified\r\nContent-Length: 5\r\n\r\n",
    b"HTTP/1.0 200 OK\r\nContent-Length: 5\r\n\r\nhello",
    b"HTTP/1.1 2x0 OK\r\nContent-Length: 5\r\n\r\nhello",
    b"HTTP/1.1 200 OK\r\nBad Name: v\r\nContent-Length: 5\r\n\r\nhello",
    b"HTTP/1.1 200 OK\r\nX: a\x01\r\nContent-Length: 5\r\n\r\nhello",
    b"HTTP/1.1 200 OK\r\nConnection: upgrade\r\nContent-Length: 5\r\n\r\nhello",
    # Relayed as received, it would pass this hop's Keep-Alive on to the client.
    b"HTTP/1.1 200 OK\r\nKeep-Alive: timeout=5\r\nContent-Length: 5\r\n\r\nhello",
]


@pytest.mark.parametrize("data", PLAIN_RESPONSES)
def test_a_plain_response_reads_as_httptools_reads_it(data: bytes) -> None:
    assert plain_response(data) == response_by_httptools(data)
    assert plain_response(data) is not None


@pytest.mark.parametrize("data", NOT_PLAIN_RESPONSES)
def test_a_response_that_is_not_plain_is_left_to_httptools(data: bytes) -> None:
    assert plain_response(data) is None


def test_mutated_responses_never_end_otherwise_than_httptools() -> None:
    taken = 0
    for data in mutants(PLAIN_RESPONSES, b" :\r\n\t\x00\x7f0123456789+-,Aa", 2, 11):
        plain = plain_response(data)
        if plain is not None:
            taken += 1
            assert response_by_httptools(data) == plain, data
    assert taken > 1000

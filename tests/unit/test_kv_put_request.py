"""Which raw requests the server's fast lane takes as plain KV puts, and what it reads."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from meshlet.api.kv_put_request import INCOMPLETE, KvPut, parse


def put(target: str = "/v1/kv/app/colour", body: bytes = b"blue",
        headers: str = "Host: x\r\n", version: str = "HTTP/1.1") -> bytes:
    return (f"PUT {target} {version}\r\n{headers}Content-Length: {len(body)}\r\n\r\n"
            .encode() + body)


def test_a_plain_put_gives_key_cas_and_body() -> None:
    raw = put()
    request = parse(raw)
    assert request == KvPut("app/colour", None, raw.index(b"blue"), len(raw), True)
    assert raw[request.body_start:request.end] == b"blue"  # type: ignore[union-attr]
    assert parse(put("/v1/kv/a?cas=0")).cas == 0  # type: ignore[union-attr]
    assert parse(put("/v1/kv/a?cas=17")).cas == 17  # type: ignore[union-attr]


def test_connection_close_is_honoured() -> None:
    request = parse(put(headers="Connection: Close\r\n"))
    assert isinstance(request, KvPut) and not request.keep_alive


def test_pipelined_requests_end_where_the_first_does() -> None:
    first, second = put(body=b"1"), put(body=b"22")
    request = parse(first + second)
    assert isinstance(request, KvPut) and request.end == len(first)
    assert parse((first + second)[request.end:]) == parse(second)


@given(st.binary(max_size=40), st.sampled_from(["", "?cas=5"]))
def test_every_prefix_of_a_put_is_incomplete(body: bytes, query: str) -> None:
    raw = put("/v1/kv/k" + query, body)
    for cut in range(len(raw)):
        assert parse(raw[:cut]) is INCOMPLETE, raw[:cut]
    assert isinstance(parse(raw), KvPut)
    assert parse(bytearray(raw)) == parse(raw)  # the fast lane's buffer is a bytearray


def test_anything_else_goes_to_aiohttp() -> None:
    others = [
        b"GET /v1/kv/a HTTP/1.1\r\n\r\n",
        b"PUT /v1/kvx HTTP/1.1\r\n\r\n",
        b"PUT /v1/config/web HTTP/1.1\r\nContent-Length: 0\r\n\r\n",
        put(version="HTTP/1.0"),
        put("/v1/kv/a?cas=-1"), put("/v1/kv/a?cas=x"), put("/v1/kv/a?cas=1&x=2"),
        put("/v1/kv/a?raw"),
        put("/v1/kv/a%2Fb"), put("/v1/kv/a b"), put("/v1/kv/"),
        put("/v1/kv/a//b"), put("/v1/kv/a/./b"), put("/v1/kv/../b"), put("/v1/kv/a/"),
        put(headers="Transfer-Encoding: chunked\r\n"),
        put(headers="Expect: 100-continue\r\n"),
        put(headers="Content-Length: 4\r\n"),  # a second length
        put(headers=" folded: header\r\n"),
        put(headers="no colon\r\n"),
        b"PUT /v1/kv/a HTTP/1.1\r\nContent-Length: 9999999999\r\n\r\n",
        b"PUT /v1/kv/a HTTP/1.1\r\n\r\n",  # no length
        b"PUT /v1/kv/a HTTP/1.1\r\nContent-Length: +4\r\n\r\nblue",
        b"POST /v1/kv/a HTTP/1.1\r\n\r\n",
    ]
    for raw in others:
        assert parse(raw) is None, raw


def test_a_head_that_never_ends_goes_to_aiohttp() -> None:
    raw = b"PUT /v1/kv/a HTTP/1.1\r\n" + b"X-Filler: " + b"y" * 20000
    assert parse(raw) is None


def test_the_token_is_read_from_either_header_as_the_routes_read_it() -> None:
    def token(headers: str) -> object:
        request = parse(put(headers=headers))
        return request.token if isinstance(request, KvPut) else request
    assert token("") is None
    assert token("X-Meshlet-Token: abc\r\n") == "abc"
    assert token("authorization: Bearer  xyz \r\n") == "xyz"
    assert token("X-Meshlet-Token: abc\r\nAuthorization: Bearer xyz\r\n") == "abc"
    # Forms whose meaning the fast lane does not judge go to aiohttp.
    assert parse(put(headers="Authorization: Basic dXNlcjpw\r\n")) is None
    assert parse(put(headers="X-Meshlet-Token: a\r\nX-Meshlet-Token: b\r\n")) is None
    assert parse(put(headers="X-Meshlet-Token: caf\u00e9\r\n".encode().decode("latin-1"))) \
        is None


def test_a_cr_or_lf_inside_a_header_line_goes_to_aiohttp() -> None:
    """``X: y\nTransfer-Encoding: chunked`` is two headers to a parser that ends lines
    at a bare LF: never read here as one."""
    assert parse(put(headers="X: y\nTransfer-Encoding: chunked\r\n")) is None
    assert parse(put(headers="X: y\rz\r\n")) is None
    assert parse(put(headers="X: y\n\r\n")) is None


def test_heads_aiohttp_would_refuse_go_to_aiohttp() -> None:
    """Header names that are not tokens, and controls in a value, are aiohttp's to
    refuse (400); so is a second Connection header, which it reads its own way."""
    for headers in ("Bad Header: 1\r\n", "a@b: 1\r\n", "Content-Length\x00: 4\r\n",
                    "X-A: a\x00b\r\n", "X-A: a\x1fb\r\n", "X-A: a\x7f\r\n",
                    "X-Meshlet-Token: tok\x0b\r\n",
                    "Connection: close\r\nConnection: keep-alive\r\n"):
        assert parse(put(headers=headers)) is None, headers
    assert isinstance(parse(put(headers="X-A: tab\there\r\n")), KvPut)


def test_connection_tokens_are_read_exactly() -> None:
    for value, keep_alive in (("close", False), ("Keep-Alive, Close", False),
                              ("closed", True), ("keep-alive", True), ("upgrade-x", True)):
        request = parse(put(headers=f"Connection: {value}\r\n"))
        assert isinstance(request, KvPut) and request.keep_alive is keep_alive, value

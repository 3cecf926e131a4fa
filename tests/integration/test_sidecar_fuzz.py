"""Hypothesis throws generated and mangled request heads at a sidecar's listener, in
front of a healthy backend, over real sockets.

What must hold for every one: the sidecar answers with a well-formed status line or
closes the connection, never with a 5xx of its own (a 502 here would mean it sent the
backend something the backend could not read: a request smuggled or mis-framed) except
the documented 501 for CONNECT and Upgrade; and it keeps serving a plain request
afterwards. Half the requests are ones a client might send, with edge cases in their
framing headers (where smuggling lives); half mix valid and invalid parts. Bounded:
``MESHLET_FUZZ_EXAMPLES`` (default 400) requests, a few seconds.
"""

from __future__ import annotations

import asyncio
import os
import re
import socket
import string
import threading
from collections.abc import Iterator

import pytest
from hypothesis import HealthCheck, Phase, event, given, settings
from hypothesis import strategies as st

from meshlet.proxy.sidecar import Sidecar
from tests.integration.test_proxy_http import start_backend, start_sidecar

EXAMPLES = int(os.environ.get("MESHLET_FUZZ_EXAMPLES", "400"))
STATUS_LINE = re.compile(rb"^HTTP/1\.[01] (\d{3}) ")

TCHAR = "!#$%&'*+-.^_`|~" + string.digits + string.ascii_letters
TOKEN = st.text(alphabet=TCHAR, min_size=1, max_size=12)
ANY_BYTES = st.binary(max_size=40)
VALID_METHODS = st.sampled_from(["GET", "POST", "PUT", "DELETE", "HEAD", "OPTIONS", "PATCH"])
METHODS = st.one_of(VALID_METHODS, VALID_METHODS, VALID_METHODS,
                    st.sampled_from(["CONNECT", "TRACE", "get", "G ET", ""]), TOKEN)
PRINTABLE = st.text(alphabet=st.characters(min_codepoint=0x21, max_codepoint=0x7e), max_size=20)
WILD = st.text(max_size=20)  # any code point, control characters included
TARGETS = st.one_of(st.sampled_from(["/", "/a?b=c", "/x/y", "/?chunked=2"]),
                    PRINTABLE.map(lambda t: "/" + t),
                    st.sampled_from(["*", "http://x/", "//", "/%00", "/\x7f", "/" + "a" * 9000]),
                    WILD.map(lambda t: "/" + t))
VERSIONS = st.one_of(st.sampled_from(["HTTP/1.1", "HTTP/1.0"]),
                     st.sampled_from(["HTTP/1.1", "HTTP/1.0", "HTTP/0.9", "HTTP/2.0", "HTTP/1.1 ",
                                      "http/1.1", "HTTP/1", ""]))
HEADER_NAMES = st.one_of(st.sampled_from(["Host", "Content-Length", "Transfer-Encoding",
                                          "Connection", "Upgrade", "Expect", "Te",
                                          "X-Forwarded-For"]), TOKEN, TOKEN,
                         st.sampled_from(["Content-Length ", " Host", "Host:", ""]))
HEADER_VALUES = st.one_of(st.sampled_from(["x", "0", "5", "-1", "1e3", "chunked",
                                           "chunked, identity", "gzip, chunked",
                                           "close", "keep-alive", "upgrade", "websocket",
                                           "100-continue", "99999999999999999999",
                                           "v" * 70000]),
                          PRINTABLE, PRINTABLE, WILD)
HEADERS = st.lists(st.tuples(HEADER_NAMES, HEADER_VALUES), max_size=6)
BODIES = st.one_of(st.just(b""), ANY_BYTES, st.sampled_from([
    b"0\r\n\r\n", b"5\r\nhello\r\n0\r\n\r\n", b"zz\r\n", b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"]))
SEPARATORS = st.sampled_from(["\r\n", "\r\n", "\r\n", "\n", "\r"])


FRAMING = st.lists(st.tuples(
    st.sampled_from(["Content-Length", "Transfer-Encoding", "Connection", "Expect", "Te"]),
    st.sampled_from(["0", "5", "-1", "05", "5, 5", "chunked", "identity", "gzip, chunked",
                     "chunked, gzip", "close", "keep-alive", "100-continue", "trailers"])),
    max_size=3)
PLAIN_HEADERS = st.lists(st.tuples(TOKEN, PRINTABLE), max_size=4)


@st.composite
def plausible_request(draw: st.DrawFn) -> bytes:
    """A request a real client might send, with edge cases in its framing headers."""
    line = f"{draw(VALID_METHODS)} {draw(st.sampled_from(['/', '/a?b=c', '/x/y']))} " \
           f"{draw(st.sampled_from(['HTTP/1.1', 'HTTP/1.0']))}"
    headers = [("Host", "web"), *draw(PLAIN_HEADERS), *draw(FRAMING)]
    head = "\r\n".join([line, *(f"{n}: {v}" for n, v in draw(st.permutations(headers)))])
    return (head + "\r\n\r\n").encode() + draw(BODIES)


@st.composite
def wild_request(draw: st.DrawFn) -> bytes:
    """Any mixture of valid and invalid parts, sometimes with bytes overwritten."""
    sep = draw(SEPARATORS)
    line = " ".join(p for p in (draw(METHODS), draw(TARGETS), draw(VERSIONS)) if p)
    headers = draw(HEADERS)
    if draw(st.integers(0, 3)):
        headers = [("Host", "web"), *headers]
    head = sep.join([line, *(f"{n}: {v}" for n, v in headers)]) + sep + sep
    raw = head.encode("utf-8", "surrogateescape") + draw(BODIES)
    if draw(st.booleans()):
        mangled = bytearray(raw)
        for index, byte in draw(st.lists(st.tuples(st.integers(0, max(len(raw) - 1, 0)),
                                                   st.integers(0, 255)), max_size=4)):
            if mangled:
                mangled[index % len(mangled)] = byte
        raw = bytes(mangled)
    return raw


request_heads = st.one_of(plausible_request(), wild_request())


class RunningSidecar:
    """A sidecar and its backend on an event loop of their own thread."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.sidecar: Sidecar = self.run(self.start())
        self.port = self.sidecar.ports()["outbound:web"]

    def run(self, coro):  # type: ignore[no-untyped-def]
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(30)

    async def start(self) -> Sidecar:
        self.backend, port = await start_backend("b0")
        return await start_sidecar(port)

    def stop(self) -> None:
        self.run(self.sidecar.stop(grace=1.0))
        self.run(self.backend.cleanup())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()

    def exchange(self, raw: bytes) -> bytes:
        """Send ``raw``, half-close, and read what comes back until the sidecar closes."""
        with socket.create_connection(("127.0.0.1", self.port), timeout=15) as sock:
            try:
                sock.sendall(raw)
                sock.shutdown(socket.SHUT_WR)
            except OSError:  # the sidecar may refuse a head before it is all sent
                pass
            chunks = []
            while True:
                try:
                    chunk = sock.recv(65536)
                except ConnectionResetError:
                    break
                if not chunk:
                    break
                chunks.append(chunk)
            return b"".join(chunks)


@pytest.fixture(scope="module")
def proxy() -> Iterator[RunningSidecar]:
    running = RunningSidecar()
    yield running
    running.stop()


def may_be_501(raw: bytes) -> bool:
    head = raw.split(b"\r\n\r\n", 1)[0].lower()
    return head.startswith(b"connect") or b"upgrade" in head


@given(raw=request_heads)
@settings(max_examples=EXAMPLES, deadline=None, derandomize=True, database=None,
          phases=[Phase.explicit, Phase.generate],  # no shrinking: bounded in time
          suppress_health_check=list(HealthCheck))
def test_no_head_gets_a_sidecar_made_5xx(proxy: RunningSidecar, raw: bytes) -> None:
    answer = proxy.exchange(raw)
    for match in re.finditer(rb"(?:^|\r\n)(HTTP/1\.[01] (\d{3}) )", answer):
        status = int(match.group(2))
        assert status < 500 or (status == 501 and may_be_501(raw)), (
            f"answered {status} to {raw[:300]!r}: {answer[:300]!r}")
    first = STATUS_LINE.match(answer)
    event(f"answered {first.group(1).decode()}" if first else "closed without an answer")
    if answer:
        assert STATUS_LINE.match(answer), f"not an HTTP answer: {answer[:200]!r}"
    assert b"200 OK" in proxy.exchange(b"GET / HTTP/1.1\r\nHost: web\r\n\r\n"), \
        "the sidecar stopped serving"

"""A small HTTP/1.1 server for the sidecar's admin API, on the listeners' own stack.

An asyncio Protocol parsed by httptools, as ``http.py``'s connections are, so a sidecar
needs no web framework (aiohttp alone is a third of a sidecar's memory). It serves one
request at a time per connection, in order (pipelined requests wait their turn, since
a handler answers at once), with keep-alive, and bounds what a client can hold:

- a request target longer than ``Limits.max_url`` gets 414, a head larger than
  ``Limits.max_head`` or with more than ``Limits.max_headers`` fields gets 431, a body
  larger than ``Limits.max_body`` gets 413 as soon as its Content-Length (or its bytes
  so far) say so; each closes the connection. Bytes reach httptools in slices of
  ``FEED_SLICE``, so a head is refused before httptools has gathered much more than
  ``max_head`` of it (httptools joins a header's value before it calls back);
- a request not complete ``Limits.request_timeout`` seconds after its first byte, or a
  connection idle ``Limits.idle_timeout`` seconds between requests, is closed (408 if a
  request had begun);
- a client that pipelines requests and does not read its answers: once the transport's
  write buffer is above its high-water mark (``pause_writing``) the connection stops
  reading, and requests already read wait, unanswered, until the buffer drains
  (``resume_writing``); what it holds is one read's worth of requests and the buffer.

``Handler`` turns a ``Request`` into a ``Response`` and never raises: errors are its
business (``admin.py`` writes them as JSON). ``serve`` listens on TCP, on a Unix socket,
or on a socket made by the caller (``admin_access.private_unix_socket``).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from urllib.parse import parse_qsl, unquote

import httptools

from meshlet.proxy.admin_socket import private_unix_socket

log = logging.getLogger(__name__)

JSON = "application/json; charset=utf-8"
REASONS = {200: "OK", 400: "Bad Request", 401: "Unauthorized", 403: "Forbidden",
           404: "Not Found", 405: "Method Not Allowed", 408: "Request Timeout",
           413: "Payload Too Large", 414: "URI Too Long",
           431: "Request Header Fields Too Large", 500: "Internal Server Error",
           503: "Service Unavailable"}
FEED_SLICE = 16 * 1024
WRITE_HIGH_WATER = 256 * 1024
LINGER = 2.0


@dataclass(frozen=True)
class Limits:
    max_body: int = 8 * 1024 * 1024
    max_url: int = 8 * 1024
    max_head: int = 64 * 1024  # request line and header fields
    max_headers: int = 100
    request_timeout: float = 10.0
    idle_timeout: float = 75.0


@dataclass(frozen=True)
class Request:
    method: str
    path: str
    query: dict[str, str]  # the first value of each name
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)  # lower-cased names, first value


@dataclass(frozen=True)
class Response:
    status: int
    body: bytes = b""
    content_type: str = JSON
    headers: tuple[tuple[str, str], ...] = field(default=())


Handler = Callable[[Request], Response]


def json_response(value: object, status: int = 200,
                  headers: tuple[tuple[str, str], ...] = ()) -> Response:
    return Response(status, json.dumps(value).encode(), JSON, headers)


def error_response(status: int, code: str, message: str, field: str | None = None,
                   headers: tuple[tuple[str, str], ...] = ()) -> Response:
    """The API's error body: ``{"error": {"code", "message", "field"}}``."""
    return json_response({"error": {"code": code, "message": message, "field": field}},
                         status, headers)


def encode(response: Response, keep_alive: bool, head_only: bool = False) -> bytes:
    head = [f"HTTP/1.1 {response.status} {REASONS.get(response.status, 'Unknown')}",
            f"Content-Type: {response.content_type}",
            f"Content-Length: {len(response.body)}",
            f"Connection: {'keep-alive' if keep_alive else 'close'}",
            *(f"{name}: {value}" for name, value in response.headers)]
    payload = b"" if head_only else response.body
    return ("\r\n".join(head) + "\r\n\r\n").encode("latin-1") + payload


class AdminConnection(asyncio.Protocol):
    """One client of the admin API."""

    def __init__(self, handle: Handler, limits: Limits, server: AdminServer) -> None:
        self.handle = handle
        self.limits = limits
        self.server = server
        self.loop = asyncio.get_running_loop()
        self.parser = httptools.HttpRequestParser(self)
        self.transport: asyncio.Transport | None = None
        self.url = b""
        self.headers: dict[str, str] = {}
        self.head_size = 0   # bytes of the request line and fields seen in callbacks
        self.fields = 0
        self.head_fed = 0    # bytes fed to httptools while inside this request's head
        self.in_head = False
        self.began = False   # a request began during the slice being fed
        self.expect_continue = False
        self.body: list[bytes] = []
        self.size = 0
        self.in_request = False
        self.closed = False
        self.writing_paused = False
        self.waiting: deque[tuple[Request, bool]] = deque()  # read, not yet answered
        self.timer: asyncio.TimerHandle | None = None

    def __repr__(self) -> str:
        return (f"<AdminConnection in_request={self.in_request} closed={self.closed} "
                f"paused={self.writing_paused} waiting={len(self.waiting)}>")

    # -- asyncio.Protocol -------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        assert self.transport is not None
        self.transport.set_write_buffer_limits(high=WRITE_HIGH_WATER)
        self.server.connections.add(self)
        self.arm(self.limits.idle_timeout)

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.waiting.clear()
        self.server.connections.discard(self)
        self.disarm()

    def pause_writing(self) -> None:
        """The client does not read its answers: stop reading its requests."""
        self.writing_paused = True
        if self.transport is not None and not self.closed:
            self.transport.pause_reading()

    def resume_writing(self) -> None:
        self.writing_paused = False
        self.answer_waiting()
        if not self.writing_paused and not self.closed and self.transport is not None:
            self.transport.resume_reading()

    def data_received(self, data: bytes) -> None:
        if self.closed:  # lingering after a refusal: dropped
            return
        for start in range(0, len(data), FEED_SLICE):
            if self.closed:
                return
            chunk = data[start:start + FEED_SLICE]
            self.began = False
            if not self.feed(chunk):
                return
            if self.in_head and not self.began:  # the whole slice was head
                self.head_fed += len(chunk)
                if self.head_fed > self.limits.max_head:
                    self.head_too_large()
                    return

    def feed(self, chunk: bytes) -> bool:
        """Give ``chunk`` to httptools; False if the connection is being closed."""
        try:
            self.parser.feed_data(chunk)
        except httptools.HttpParserUpgrade:
            self.refuse(error_response(400, "invalid", "protocol upgrades are not served"))
        except httptools.HttpParserCallbackError:
            log.exception("admin API bug while handling a request; closing the connection")
            self.close()
        except httptools.HttpParserError as exc:
            self.refuse(error_response(400, "invalid", f"malformed HTTP request: {exc}"))
        return not self.closed

    # -- httptools callbacks ----------------------------------------------------------

    def on_message_begin(self) -> None:
        self.url, self.headers, self.body, self.size = b"", {}, [], 0
        self.head_size = self.head_fed = self.fields = 0
        self.in_head = self.began = True
        self.expect_continue = False
        self.in_request = True
        self.arm(self.limits.request_timeout)

    def on_url(self, url: bytes) -> None:
        if self.closed:
            return
        if len(self.url) + len(url) > self.limits.max_url:
            self.refuse(error_response(
                414, "invalid", f"request target is longer than {self.limits.max_url} bytes"))
            return
        self.url += url
        self.head_size += len(url)

    def on_header(self, name: bytes, value: bytes) -> None:
        if self.closed:
            return
        self.head_size += len(name) + len(value) + 4  # ": " and CRLF
        self.fields += 1
        if self.fields > self.limits.max_headers \
                or self.head_size > self.limits.max_head:
            self.head_too_large()
            return
        lowered = name.lower()
        self.headers.setdefault(lowered.decode("latin-1"), value.decode("latin-1"))
        if lowered == b"content-length" and value.strip().isdigit() \
                and int(value) > self.limits.max_body:
            self.too_large()
        elif lowered == b"expect" and value.strip().lower() == b"100-continue":
            self.expect_continue = True

    def on_headers_complete(self) -> None:
        self.in_head = False
        if self.expect_continue and not self.closed and self.transport is not None:
            self.transport.write(b"HTTP/1.1 100 Continue\r\n\r\n")

    def on_body(self, body: bytes) -> None:
        self.size += len(body)
        if self.size > self.limits.max_body:
            self.too_large()
        elif not self.closed:
            self.body.append(body)

    def on_message_complete(self) -> None:
        if self.closed:
            return
        self.in_request = False
        method = self.parser.get_method().decode("latin-1")
        keep_alive = self.parser.should_keep_alive()
        try:
            url = httptools.parse_url(self.url)
        except httptools.HttpParserInvalidURLError:
            self.refuse(error_response(400, "invalid", "malformed request target"))
            return
        path = unquote(url.path.decode("latin-1"))
        query = dict(reversed(parse_qsl((url.query or b"").decode("latin-1"))))
        request = Request(method, path, query, b"".join(self.body), self.headers)
        self.body = []
        self.waiting.append((request, keep_alive))
        self.answer_waiting()

    # -- replies and deadlines --------------------------------------------------------

    def answer_waiting(self) -> None:
        """Answer the requests read so far, in order, while the client reads."""
        while self.waiting and not self.writing_paused and not self.closed:
            request, keep_alive = self.waiting.popleft()
            response = self.handle(request)
            self.respond(response, keep_alive and not self.server.closing,
                         request.method == "HEAD")

    def respond(self, response: Response, keep_alive: bool, head_only: bool = False) -> None:
        if self.closed or self.transport is None:
            return
        self.transport.write(encode(response, keep_alive, head_only))
        if keep_alive:
            if not self.in_request:
                self.arm(self.limits.idle_timeout)
        else:
            self.close()

    def refuse(self, response: Response) -> None:
        """Answer a request that cannot be served and close: its remaining bytes, if
        any, cannot be told from the next request's. Requests read before it are
        answered first (unless the client is not reading)."""
        self.answer_waiting()
        self.waiting.clear()
        if self.closed or self.transport is None:
            return
        self.transport.write(encode(response, keep_alive=False))
        self.linger()

    def linger(self) -> None:
        """Close our side, then read and drop what the client still sends, for up to
        ``LINGER`` seconds: a socket closed with unread bytes resets the connection, and
        the client could lose the answer before reading it (nginx's lingering close)."""
        assert self.transport is not None
        if self.writing_paused or not self.transport.can_write_eof():
            self.close()
            return
        self.closed = True
        self.disarm()
        self.transport.write_eof()
        self.timer = self.loop.call_later(LINGER, self.close)

    def too_large(self) -> None:
        if not self.closed:
            self.refuse(error_response(
                413, "invalid", f"request body is larger than {self.limits.max_body} bytes",
                "body"))

    def head_too_large(self) -> None:
        if not self.closed:
            self.refuse(error_response(
                431, "invalid", f"request head is larger than {self.limits.max_head} bytes "
                                f"or has more than {self.limits.max_headers} fields"))

    def arm(self, seconds: float) -> None:
        self.disarm()
        self.timer = self.loop.call_later(seconds, self.timed_out)

    def disarm(self) -> None:
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None

    def timed_out(self) -> None:
        self.timer = None
        if self.in_request:
            self.refuse(error_response(
                408, "invalid",
                f"request not complete within {self.limits.request_timeout:g} s"))
        else:
            self.close()

    def close(self) -> None:
        """Close after the answers are sent; drop them if the client is not reading
        (a close would wait for it forever)."""
        self.closed = True
        self.disarm()
        self.waiting.clear()
        if self.transport is not None and not self.transport.is_closing():
            if self.writing_paused:
                self.transport.abort()
            else:
                self.transport.close()


class AdminServer:
    """The listening socket and its connections; ``address`` is the bound port, or
    ``unix:PATH``."""

    def __init__(self, handle: Handler, limits: Limits) -> None:
        self.handle = handle
        self.limits = limits
        self.connections: set[AdminConnection] = set()
        self.server: asyncio.AbstractServer | None = None
        self.address: int | str = 0
        self.unix_path: str | None = None
        self.closing = False

    def __repr__(self) -> str:
        return f"<AdminServer {self.address} connections={len(self.connections)}>"

    def protocol(self) -> AdminConnection:
        return AdminConnection(self.handle, self.limits, self)

    async def start(self, host: str, port: int = 0) -> None:
        """Listen on ``host:port``, or on a Unix socket of mode 0600 if ``host`` is
        ``unix:PATH`` (in a directory only its owner can write; a stale socket file
        there is replaced). Raises OSError naming the address."""
        loop = asyncio.get_running_loop()
        try:
            if host.startswith("unix:"):
                sock = private_unix_socket(host[5:])
                self.unix_path = host[5:]
                self.server = await loop.create_unix_server(self.protocol, sock=sock)
                self.address = host
            else:
                self.server = await loop.create_server(self.protocol, host, port,
                                                       reuse_address=True)
                self.address = int(self.server.sockets[0].getsockname()[1])
        except OSError as exc:
            where = host if host.startswith("unix:") else f"{host}:{port}"
            if exc.errno is None:  # refused by private_unix_socket: its own message
                raise OSError(f"cannot listen on {where} for the admin API: {exc}") from None
            raise OSError(exc.errno, f"cannot listen on {where} for the admin API: "
                                     f"{exc.strerror}") from None

    async def stop(self) -> None:
        """Stop listening, close every connection, remove the socket file."""
        self.closing = True
        if self.server is not None:
            self.server.close()
        for conn in list(self.connections):
            conn.close()
        if self.server is not None:
            await self.server.wait_closed()
        if self.unix_path is not None:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.unix_path)


async def serve(handle: Handler, host: str, port: int = 0,
                limits: Limits | None = None) -> AdminServer:
    server = AdminServer(handle, limits or Limits())
    await server.start(host, port)
    return server

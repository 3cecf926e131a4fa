"""A small HTTP/1.1 server for the sidecar's admin API, on the listeners' own stack.

An asyncio Protocol parsed by httptools, as ``http.py``'s connections are, so a sidecar
needs no web framework (aiohttp alone is a third of a sidecar's memory). It serves one
request at a time per connection, in order (pipelined requests wait their turn, since
a handler answers at once), with keep-alive, and bounds what a client can hold:

- a request body larger than ``Limits.max_body`` gets 413 as soon as its
  Content-Length (or its bytes so far) say so, and the connection closes;
- a request not complete ``Limits.request_timeout`` seconds after its first byte, or a
  connection idle ``Limits.idle_timeout`` seconds between requests, is closed (408 if a
  request had begun).

``Handler`` turns a ``Request`` into a ``Response`` and never raises: errors are its
business (``admin.py`` writes them as JSON). ``serve`` listens on TCP or on a Unix socket.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from urllib.parse import parse_qsl, unquote

import httptools

log = logging.getLogger(__name__)

JSON = "application/json; charset=utf-8"
REASONS = {200: "OK", 400: "Bad Request", 404: "Not Found", 405: "Method Not Allowed",
           408: "Request Timeout", 413: "Payload Too Large", 500: "Internal Server Error",
           503: "Service Unavailable"}


@dataclass(frozen=True)
class Limits:
    max_body: int = 8 * 1024 * 1024
    request_timeout: float = 10.0
    idle_timeout: float = 75.0


@dataclass(frozen=True)
class Request:
    method: str
    path: str
    query: dict[str, str]  # the first value of each name
    body: bytes = b""


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
        self.expect_continue = False
        self.body: list[bytes] = []
        self.size = 0
        self.in_request = False
        self.closed = False
        self.timer: asyncio.TimerHandle | None = None

    def __repr__(self) -> str:
        return f"<AdminConnection in_request={self.in_request} closed={self.closed}>"

    # -- asyncio.Protocol -------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.server.connections.add(self)
        self.arm(self.limits.idle_timeout)

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.server.connections.discard(self)
        self.disarm()

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self.refuse(error_response(400, "invalid", "protocol upgrades are not served"))
        except httptools.HttpParserCallbackError:
            log.exception("admin API bug while handling a request; closing the connection")
            self.close()
        except httptools.HttpParserError as exc:
            self.refuse(error_response(400, "invalid", f"malformed HTTP request: {exc}"))

    # -- httptools callbacks ----------------------------------------------------------

    def on_message_begin(self) -> None:
        self.url, self.body, self.size = b"", [], 0
        self.expect_continue = False
        self.in_request = True
        self.arm(self.limits.request_timeout)

    def on_url(self, url: bytes) -> None:
        self.url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        lowered = name.lower()
        if lowered == b"content-length" and value.strip().isdigit() \
                and int(value) > self.limits.max_body:
            self.too_large()
        elif lowered == b"expect" and value.strip().lower() == b"100-continue":
            self.expect_continue = True

    def on_headers_complete(self) -> None:
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
        response = self.handle(Request(method, path, query, b"".join(self.body)))
        self.body = []
        self.respond(response, keep_alive and not self.server.closing, method == "HEAD")

    # -- replies and deadlines --------------------------------------------------------

    def respond(self, response: Response, keep_alive: bool, head_only: bool = False) -> None:
        if self.closed or self.transport is None:
            return
        self.transport.write(encode(response, keep_alive, head_only))
        if keep_alive:
            self.arm(self.limits.idle_timeout)
        else:
            self.close()

    def refuse(self, response: Response) -> None:
        """Answer a request that cannot be served and close: its remaining bytes, if
        any, cannot be told from the next request's."""
        self.respond(response, keep_alive=False)
        self.close()

    def too_large(self) -> None:
        if not self.closed:
            self.refuse(error_response(
                413, "invalid", f"request body is larger than {self.limits.max_body} bytes",
                "body"))

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
        if not self.closed and self.transport is not None:
            self.closed = True
            self.disarm()
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
        """Listen on ``host:port``, or on a Unix socket if ``host`` is ``unix:PATH``
        (a stale socket file there is replaced). Raises OSError naming the address."""
        loop = asyncio.get_running_loop()
        try:
            if host.startswith("unix:"):
                self.unix_path = host[5:]
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(self.unix_path)
                self.server = await loop.create_unix_server(self.protocol, self.unix_path)
                self.address = host
            else:
                self.server = await loop.create_server(self.protocol, host, port,
                                                       reuse_address=True)
                self.address = int(self.server.sockets[0].getsockname()[1])
        except OSError as exc:
            where = host if host.startswith("unix:") else f"{host}:{port}"
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
            try:
                os.unlink(self.unix_path)
            except FileNotFoundError:
                pass


async def serve(handle: Handler, host: str, port: int = 0,
                limits: Limits | None = None) -> AdminServer:
    server = AdminServer(handle, limits or Limits())
    await server.start(host, port)
    return server

"""HTTP exchanges for a process that makes a few requests and exits: a CLI command.

Each request goes on a connection of its own through the standard library's
``http.client``, in a daemon thread, within one deadline for the whole exchange, so a
command starts without importing aiohttp (a third of a second, more than the rest of a
typical command) and an interrupted command exits at once instead of waiting for a
blocking query to end. Long-lived
processes (agents, servers) keep the pooled aiohttp session (``client.py``).
"""

from __future__ import annotations

import asyncio
import http.client
import json
import ssl
import threading
from collections.abc import Mapping
from typing import Any, Protocol
from urllib.parse import urlencode, urlsplit


class Disconnected(Exception):
    """The server closed the connection without an HTTP answer."""


class TooLarge(Exception):
    """The answer is longer than a meshlet server's could be."""


# Far above any meshlet server's answer (a request body is at most 4 MiB); the bound on
# what a hostile one could make a command hold.
MAX_ANSWER_BYTES = 256 * 1024 * 1024


class Headers(Protocol):
    """An answer's headers, looked up in any case (http.client's and aiohttp's)."""

    def get(self, name: str, default: str, /) -> str | None: ...


Answer = tuple[int, Headers, bytes]  # status, headers, body


def exchange(method: str, url: str, headers: Mapping[str, bytes], body: bytes | None,
             timeout: float, tls: ssl.SSLContext | None) -> Answer:
    """One request and its whole answer; raises Disconnected, TooLarge or OSError
    (timeouts, refusals, TLS failures, addresses that are not one, answers that are not
    HTTP)."""
    try:
        parts = urlsplit(url)
        https = parts.scheme == "https"
        if parts.scheme not in ("http", "https"):
            raise OSError(f"{parts.scheme}:// is not http:// or https://")
        host, port = parts.hostname or "", parts.port or (443 if https else 80)
        connection: http.client.HTTPConnection
        if https:
            connection = http.client.HTTPSConnection(host, port, timeout=timeout,
                                                     context=tls)
        else:
            connection = http.client.HTTPConnection(host, port, timeout=timeout)
    except ValueError as exc:  # a port that is not a number, an unclosed bracket
        raise OSError(f"not an address: {exc}") from None
    target = parts.path + (f"?{parts.query}" if parts.query else "")
    try:
        connection.request(method, target, body=body, headers=dict(headers))
        response = connection.getresponse()
        answer = response.read(MAX_ANSWER_BYTES + 1)
        if len(answer) > MAX_ANSWER_BYTES:
            raise TooLarge()
        return response.status, response.headers, answer
    except (http.client.RemoteDisconnected, http.client.BadStatusLine) as exc:
        raise Disconnected(str(exc)) from None
    except http.client.IncompleteRead as exc:
        raise OSError(f"the answer ended {exc.expected} bytes short") from None
    except http.client.HTTPException as exc:  # a malformed answer: not an HTTP server's
        raise OSError(f"{type(exc).__name__}: {exc}") from None
    finally:
        connection.close()


async def request(method: str, url: str, *, headers: Mapping[str, str], json_body: Any = None,
                  data: bytes | None = None, params: Mapping[str, str] | None = None,
                  timeout: float, tls: ssl.SSLContext | None) -> Answer:
    """``exchange`` in a daemon thread: awaiting it leaves the loop free for a command's
    other requests, and cancelling it abandons the thread (the process may exit)."""
    sent = {name: value.encode() for name, value in headers.items()}  # UTF-8, as aiohttp
    body = data
    if json_body is not None:
        body = json.dumps(json_body).encode()
        sent["Content-Type"] = b"application/json"
    elif data is not None:
        sent["Content-Type"] = b"application/octet-stream"
    if params:
        url = f"{url}?{urlencode(params)}"
    loop = asyncio.get_running_loop()
    answer: asyncio.Future[Answer] = loop.create_future()

    def settle(result: Answer | None, error: BaseException | None) -> None:
        if answer.done():
            return  # cancelled meanwhile
        if error is not None:
            answer.set_exception(error)
        else:
            assert result is not None
            answer.set_result(result)

    def run() -> None:
        result: Answer | None = None
        error: BaseException | None = None
        try:
            result = exchange(method, url, sent, body, timeout, tls)
        except Exception as exc:
            error = exc
        try:
            loop.call_soon_threadsafe(settle, result, error)
        except RuntimeError:
            pass  # the loop is closed: the command ended without this answer

    threading.Thread(target=run, name="meshlet-request", daemon=True).start()
    try:  # the whole exchange's deadline: a socket's timeout bounds each read alone
        return await asyncio.wait_for(answer, timeout)
    except TimeoutError:
        raise TimeoutError(f"no whole answer within {timeout:g}s") from None

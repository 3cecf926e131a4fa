"""Who may use a sidecar's admin API.

The agent reaches its sidecars over a Unix socket of mode 0600 in the workload's
directory (0700): only the agent's user (and root) can connect, so the socket needs no
token. A TCP admin address (``meshlet proxy --admin HOST:PORT``, run by hand or by a
benchmark) can be reached by every local user, so it takes a token: 32 random bytes
the sidecar makes at start and writes to a file of mode 0600 (never on a command line,
which ``ps`` shows to all), and every request must carry it as ``Authorization: Bearer
TOKEN`` or ``X-Meshlet-Token: TOKEN`` (401 without one, 403 with another). Prometheus
scrapes the separate read-only listener (``--metrics``), which serves only ``GET
/metrics`` and ``GET /ready``.
"""

from __future__ import annotations

import hmac
import secrets

from meshlet.proxy.admin_http import Handler, Request, Response, error_response

CHALLENGE = (("WWW-Authenticate", 'Bearer realm="meshlet-sidecar"'),)


def new_token() -> str:
    return secrets.token_urlsafe(32)


def presented_token(request: Request) -> str | None:
    """The token a request carries, or None."""
    auth = request.headers.get("authorization", "")
    scheme, _, value = auth.partition(" ")
    if scheme.lower() == "bearer" and value.strip():
        return value.strip()
    return request.headers.get("x-meshlet-token") or None


def require_token(handle: Handler, token: str) -> Handler:
    """``handle``, answering only requests that carry ``token``."""
    expected = token.encode()

    def guarded(request: Request) -> Response:
        given = presented_token(request)
        if given is None:
            return error_response(401, "unauthorized",
                                  "the sidecar's admin API needs its token "
                                  "(Authorization: Bearer TOKEN)", headers=CHALLENGE)
        if not hmac.compare_digest(given.encode("latin-1"), expected):
            return error_response(403, "forbidden", "wrong admin token")
        return handle(request)
    return guarded

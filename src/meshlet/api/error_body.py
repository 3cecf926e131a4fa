"""The one shape every API failure leaves in: ``{"error": {"code", "message", "field"}}``
with its status. The aiohttp routes and the fast lane both answer through here, so a
client cannot tell which of them served it."""

from __future__ import annotations

from typing import Any

from meshlet.errors import MeshletError

INTERNAL = {"code": "internal", "message": "internal server error", "field": None}


def error_body(exc: BaseException) -> tuple[int, dict[str, Any]]:
    """Status and body for ``exc``: its own for a MeshletError, else a 500 that says no
    more (the details go to the server's log, not to the client)."""
    if isinstance(exc, MeshletError):
        return exc.http_status, {"error": exc.to_dict()}
    return 500, {"error": dict(INTERNAL)}


def http_error_body(status: int, method: str, path: str, reason: str) -> dict[str, Any]:
    """The body for an HTTP-level refusal (no such route, method not allowed)."""
    code = {404: "not_found", 405: "method_not_allowed"}.get(status, "invalid")
    return {"error": {"code": code, "message": f"{method} {path}: {reason}", "field": None}}

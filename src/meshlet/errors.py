"""One exception tree for every user-facing failure.

Foreign exceptions (OSError, aiohttp, pydantic) are translated into these at the
boundary, so callers only ever catch ``MeshletError``. Each carries a stable ``code``
used in API error bodies and an optional ``field`` naming the offending input.
"""

from __future__ import annotations


class MeshletError(Exception):
    code = "error"
    http_status = 400

    def __init__(self, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.field = field

    def to_dict(self) -> dict[str, object]:
        return {"code": self.code, "message": self.message, "field": self.field}


class ConfigError(MeshletError):
    """Input that is malformed or out of range."""

    code = "invalid"
    http_status = 400


class NotFound(MeshletError):
    code = "not_found"
    http_status = 404


class Conflict(MeshletError):
    """The request was valid but the state it assumed no longer holds (CAS)."""

    code = "conflict"
    http_status = 409


class Unauthenticated(MeshletError):
    """No token, or one the cluster does not know."""

    code = "unauthenticated"
    http_status = 401


class Forbidden(MeshletError):
    """A known token without the right the request needs."""

    code = "forbidden"
    http_status = 403


class NotLeader(MeshletError):
    code = "not_leader"
    http_status = 503


class Unavailable(MeshletError):
    """A dependency (server, sidecar, socket) cannot be reached."""

    code = "unavailable"
    http_status = 503


class NetworkError(MeshletError):
    code = "network"
    http_status = 500


class StorageError(MeshletError):
    """On-disk data is corrupt in a way recovery must not paper over."""

    code = "storage"
    http_status = 500


ERROR_TYPES: dict[str, type[MeshletError]] = {
    cls.code: cls
    for cls in (MeshletError, ConfigError, NotFound, Conflict, NotLeader, Unavailable,
                NetworkError, StorageError, Unauthenticated, Forbidden)
}


def from_dict(body: dict[str, object]) -> MeshletError:
    """Rebuild an error from an API error body (used by the HTTP client)."""
    code = str(body.get("code", "error"))
    field = body.get("field")
    cls = ERROR_TYPES.get(code, MeshletError)
    return cls(str(body.get("message", "unknown error")), str(field) if field else None)

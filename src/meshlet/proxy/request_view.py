"""The parts of a request that routing, sharding and hashing look at, decoded lazily:
a route that matches on the path alone never decodes a header."""

from __future__ import annotations

from urllib.parse import parse_qs, urlsplit


class RequestView:
    __slots__ = ("_headers", "_query", "_raw_headers", "method", "source_ip", "target")

    def __init__(self, method: str, target: str, headers: dict[str, str] | None = None,
                 source_ip: str = "", raw_headers: list[tuple[bytes, bytes]] | None = None
                 ) -> None:
        self.method = method
        self.target = target
        self.source_ip = source_ip
        self._headers = headers
        self._raw_headers = raw_headers or []
        self._query: dict[str, list[str]] | None = None

    def __repr__(self) -> str:
        return f"<RequestView {self.method} {self.target}>"

    @classmethod
    def from_raw(cls, method: bytes, target: bytes, headers: list[tuple[bytes, bytes]],
                 source_ip: str = "") -> RequestView:
        return cls(method.decode("latin-1"), target.decode("latin-1"), None, source_ip,
                   headers)

    @property
    def headers(self) -> dict[str, str]:
        """Lower-cased names; repeated headers joined with commas."""
        if self._headers is None:
            decoded: dict[str, str] = {}
            for name, value in self._raw_headers:
                key = name.decode("latin-1").lower()
                text = value.decode("latin-1")
                decoded[key] = f"{decoded[key]},{text}" if key in decoded else text
            self._headers = decoded
        return self._headers

    @property
    def path(self) -> str:
        """The target up to its query; a target with ``://`` in it as urlsplit reads
        it, or, if urlsplit cannot (``//[a://``), up to its query too."""
        before_query = self.target.split("?", 1)[0]
        if "://" not in self.target:
            return before_query
        try:
            return urlsplit(self.target).path
        except ValueError:
            return before_query

    def query(self, name: str) -> str | None:
        if self._query is None:
            _, _, raw = self.target.partition("?")
            self._query = parse_qs(raw, keep_blank_values=True)
        values = self._query.get(name)
        return values[0] if values else None

    def cookie(self, name: str) -> str | None:
        for part in self.headers.get("cookie", "").split(";"):
            key, sep, value = part.strip().partition("=")
            if sep and key == name:
                return value
        return None

    def key(self, source: str) -> str | None:
        """The value ``source`` (header:N, cookie:N, query:N, path:I, source_ip) names."""
        kind, _, name = source.partition(":")
        if kind == "header":
            return self.headers.get(name.lower())
        if kind == "cookie":
            return self.cookie(name)
        if kind == "query":
            return self.query(name)
        if kind == "path":
            segments = [s for s in self.path.split("/") if s]
            index = int(name)
            return segments[index] if index < len(segments) else None
        if kind == "source_ip":
            return self.source_ip or None
        raise AssertionError(f"unvalidated key source {source!r}")

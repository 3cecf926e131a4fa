"""The parts of a request that routing, sharding and hashing look at, decoded once."""

from __future__ import annotations

from dataclasses import dataclass, field
from urllib.parse import parse_qs, urlsplit


@dataclass
class RequestView:
    method: str
    target: str
    headers: dict[str, str]
    source_ip: str = ""
    _query: dict[str, list[str]] | None = field(default=None, repr=False)

    @classmethod
    def from_raw(cls, method: bytes, target: bytes, headers: list[tuple[bytes, bytes]],
                 source_ip: str = "") -> RequestView:
        decoded: dict[str, str] = {}
        for name, value in headers:
            key = name.decode("latin-1").lower()
            text = value.decode("latin-1")
            decoded[key] = f"{decoded[key]},{text}" if key in decoded else text
        return cls(method.decode("latin-1"), target.decode("latin-1"), decoded, source_ip)

    @property
    def path(self) -> str:
        return self.target.split("?", 1)[0] if "://" not in self.target \
            else urlsplit(self.target).path

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

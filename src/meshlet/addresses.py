"""Parsing of listen addresses and API URLs given on the command line."""

from __future__ import annotations

from meshlet.errors import ConfigError


def parse_hostport(value: str, field: str = "address") -> tuple[str, int]:
    """'HOST:PORT', ':PORT' or 'http://HOST:PORT' to (host, port); raise ConfigError."""
    text = value.split("://", 1)[-1].rstrip("/")
    host, sep, port_text = text.rpartition(":")
    if not sep or not port_text.isdigit() or not 0 <= int(port_text) < 65536:
        raise ConfigError(f"{field}: {value!r} is not HOST:PORT", field)
    host = host.strip("[]") or "127.0.0.1"
    return host, int(port_text)


def to_url(value: str) -> str:
    if "://" not in value:
        value = "http://" + value
    return value.rstrip("/")

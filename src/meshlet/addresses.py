"""Parsing of listen addresses and API URLs given on the command line."""

from __future__ import annotations

from meshlet.errors import ConfigError


def parse_hostport(value: str, field: str = "address") -> tuple[str, int]:
    """'HOST:PORT', ':PORT' or 'http://HOST:PORT' to (host, port); raise ConfigError."""
    text = value.split("://", 1)[-1].rstrip("/")
    host, sep, port_text = text.rpartition(":")
    if not sep or not (port_text.isascii() and port_text.isdigit()) \
            or not 0 <= int(port_text) < 65536:
        raise ConfigError(f"{field}: {value!r} is not HOST:PORT", field)
    host = host.strip("[]") or "127.0.0.1"
    return host, int(port_text)


def parse_ipv4(value: str, field: str) -> str:
    import ipaddress
    try:
        return str(ipaddress.IPv4Address(value))
    except ValueError:
        raise ConfigError(f"{field}: {value!r} is not an IPv4 address", field) from None


def parse_http_url(value: str, field: str) -> str:
    """An API address given as ``http://HOST:PORT`` (or https), with no path; raise
    ConfigError otherwise. A bare HOST:PORT is refused where it is easily mistaken for
    a Raft address, which has that form."""
    scheme, sep, rest = value.partition("://")
    authority, _, path = rest.partition("/")
    if not sep or scheme.lower() not in ("http", "https"):
        raise ConfigError(f"{field}: {value!r} is not an HTTP URL; give a server's API "
                          "address as http://HOST:PORT", field)
    if path or "?" in authority or "#" in authority:
        raise ConfigError(f"{field}: {value!r} has a path; give only http://HOST:PORT",
                          field)
    parse_hostport(authority, field)
    return f"{scheme.lower()}://{authority}"


def same_listener(address: tuple[str, int], other: tuple[str, int]) -> bool:
    """Whether ``other`` reaches what listens on ``address`` on this host (a wildcard
    listener is reached through any loopback or local name)."""
    if address[1] != other[1]:
        return False
    local = ("0.0.0.0", "::", "")
    return address[0] == other[0] or (address[0] in local and (
        other[0] in local or other[0] == "localhost" or other[0].startswith("127.")
        or other[0] == "::1"))


def to_url(value: str) -> str:
    """An API URL: ``http://`` added to a bare HOST:PORT, and made ``https://`` when
    the host is beyond loopback, where a server's API speaks only HTTPS."""
    if "://" not in value:
        value = "http://" + value
    value = value.rstrip("/")
    if value[:7].lower() == "http://":
        try:
            host = parse_hostport(value)[0]
        except ConfigError:
            return value  # not HOST:PORT: left for the request to fail on
        if not is_loopback(host):
            value = "https://" + value[7:]
    return value


def is_loopback(host: str) -> bool:
    """Whether ``host`` (an address, or ``localhost``) is this machine's loopback."""
    import ipaddress
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def source_address_towards(url: str) -> str:
    """The local address this host's packets to ``url`` leave from: the address other
    hosts most likely reach it on (a connected UDP socket sends nothing)."""
    import socket
    host, port = parse_hostport(url, "server")
    try:
        infos = socket.getaddrinfo(host, port, socket.AF_INET, socket.SOCK_DGRAM)
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            sock.connect(infos[0][4])
            return str(sock.getsockname()[0])
    except OSError:
        return "127.0.0.1"

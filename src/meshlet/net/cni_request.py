"""What a runtime asks `meshlet-cni` to do, checked before anything is touched (pure:
the environment and standard input in, a ``Request`` or a ``CniError`` out).

The error codes are the CNI specification's (1.0.0, "Error"): 0-99 are well known, 100
and up are this plugin's own. The checks follow the reference plugins' ``skel`` and
``utils`` (an interface name as the kernel accepts it, a container id of letters,
digits, ``_``, ``.`` and ``-``), and add meshlet's own bounds: the configuration's size
and depth, and an IPAM owner name (``cni-CONTAINER-IFNAME``) that meshlet's IPAM takes.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

VERSION = "1.0.0"
SUPPORTED = ("1.0.0",)
COMMANDS = ("ADD", "DEL", "CHECK", "VERSION")

# The specification's well-known codes.
INCOMPATIBLE_VERSION = 1
UNSUPPORTED_FIELD = 2
UNKNOWN_CONTAINER = 3
INVALID_ENVIRONMENT = 4
IO_FAILURE = 5
DECODE_FAILURE = 6
INVALID_CONFIG = 7
TRY_AGAIN = 11
# This plugin's own.
NETLINK_FAILURE = 100   # the kernel refused a link, address or route
IPAM_FAILURE = 101      # meshlet's IPAM refused the address (e.g. the pool is full)
INTERNAL_ERROR = 102    # a bug: reported in one line, never as a traceback
ALREADY_ATTACHED = 103  # this container's interface holds a lease or a veth already

MAX_CONFIG_BYTES = 1 << 20   # far above any real network configuration
MAX_DEPTH = 32               # nesting of objects and arrays in it
MAX_IFNAME = 15              # IFNAMSIZ - 1
MAX_PATH = 4096              # PATH_MAX
CNI_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.\-]*")  # fullmatch: no "\n" at the end
# meshlet's IPAM owner names (state/networks.py OWNER_NAME): the lease is held by
# ``cni-CONTAINER-IFNAME``, so both must fit in it.
OWNER_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.:-]{0,127}")


class CniError(Exception):
    """A failure as the specification reports it: ``code``, ``msg``, ``details``."""

    def __init__(self, code: int, msg: str, details: str = "") -> None:
        super().__init__(msg)
        self.code = code
        self.msg = msg
        self.details = details

    def __repr__(self) -> str:
        return f"<CniError {self.code} {self.msg!r}: {self.details!r}>"

    def result(self, version: str) -> dict[str, Any]:
        return {"cniVersion": version, "code": self.code, "msg": self.msg,
                "details": self.details}


@dataclass(frozen=True)
class Request:
    command: str
    container: str
    netns: str       # a path; "" for VERSION and for a DEL without one
    ifname: str
    config: dict[str, Any]

    @property
    def version(self) -> str:
        return str(self.config.get("cniVersion") or VERSION)

    @property
    def network(self) -> str:
        return str(self.config.get("network") or self.config["name"])

    @property
    def owner(self) -> str:
        """Who holds the address in meshlet's IPAM: one per (container, interface)."""
        return owner_of(self.container, self.ifname)

    def server(self, default: str) -> str:
        return str(self.config.get("server") or default)


def owner_of(container: str, ifname: str) -> str:
    return f"cni-{container}-{ifname}"


def check_ifname(name: str) -> None:
    """As the kernel's dev_valid_name and the reference plugins check it, plus the
    characters meshlet's IPAM owner names allow; raises CniError (4)."""
    problem = None
    if not name:
        problem = "is empty"
    elif len(name) > MAX_IFNAME:
        problem = f"is longer than {MAX_IFNAME} characters"
    elif name in (".", ".."):
        problem = "is . or .."
    elif any(c in "/:" or c.isspace() for c in name):
        problem = "contains '/', ':' or whitespace"
    elif not CNI_NAME.fullmatch(name):
        problem = "is not letters, digits, '_', '.' and '-'"
    if problem is not None:
        raise CniError(INVALID_ENVIRONMENT, "invalid CNI_IFNAME",
                       f"interface name {name!r} {problem}")


def check_container_id(container: str) -> None:
    if not CNI_NAME.fullmatch(container):
        raise CniError(INVALID_ENVIRONMENT, "invalid CNI_CONTAINERID",
                       f"{container[:80]!r}: letters, digits, '_', '.' and '-' only, "
                       "starting with a letter or digit")


def check_netns(path: str) -> None:
    if not path.startswith("/") or "\0" in path or len(path) > MAX_PATH:
        raise CniError(INVALID_ENVIRONMENT, "invalid CNI_NETNS",
                       f"{path[:80]!r} is not an absolute path")


def decode_config(stdin: bytes) -> dict[str, Any]:
    if len(stdin) > MAX_CONFIG_BYTES:
        raise CniError(DECODE_FAILURE, "the network configuration is too large",
                       f"more than {MAX_CONFIG_BYTES} bytes")
    if not stdin.strip():
        return {}
    try:
        config = json.loads(stdin)
    except (ValueError, RecursionError) as exc:
        raise CniError(DECODE_FAILURE, "cannot decode the network configuration",
                       str(exc)[:200] or "nested too deeply") from None
    if not isinstance(config, dict):
        raise CniError(DECODE_FAILURE, "the network configuration is not an object")
    if depth(config) > MAX_DEPTH:
        raise CniError(DECODE_FAILURE, "the network configuration is nested too deeply",
                       f"more than {MAX_DEPTH} levels")
    return config


def depth(value: Any) -> int:
    """How deeply ``value``'s objects and arrays nest (iterative: no recursion limit)."""
    deepest = 0
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        item, level = stack.pop()
        children = item.values() if isinstance(item, dict) else \
            item if isinstance(item, list) else None
        if children is None:
            continue
        deepest = max(deepest, level)
        if level <= MAX_DEPTH:  # beyond that the answer is known
            stack.extend((child, level + 1) for child in children)
    return deepest


def check_config(command: str, config: Mapping[str, Any]) -> None:
    version = config.get("cniVersion")
    if version not in SUPPORTED:
        raise CniError(INCOMPATIBLE_VERSION, "incompatible CNI version",
                       f"cniVersion {str(version)[:40]!r}; supported: {', '.join(SUPPORTED)}")
    name = config.get("name")
    if not isinstance(name, str) or not CNI_NAME.fullmatch(name):
        raise CniError(INVALID_CONFIG, "invalid network configuration",
                       "name: required; letters, digits, '_', '.' and '-'")
    network = config.get("network")
    if network is not None and (not isinstance(network, str) or not CNI_NAME.fullmatch(network)):
        raise CniError(INVALID_CONFIG, "invalid network configuration",
                       "network: the name of a meshlet network")
    server = config.get("server")
    if server is not None and not is_http_url(server):
        raise CniError(INVALID_CONFIG, "invalid network configuration",
                       "server: an http:// or https:// URL of the meshlet API")
    token = config.get("token")
    if token is not None and (not isinstance(token, str) or not 0 < len(token) <= 512
                              or not token.isprintable() or not token.isascii()):
        raise CniError(INVALID_CONFIG, "invalid network configuration",
                       "token: an ACL token, printable ASCII, at most 512 characters")
    if "ipam" in config:
        raise CniError(UNSUPPORTED_FIELD, "unsupported field in the network configuration",
                       "ipam: meshlet-cni takes addresses from the meshlet network's pool; "
                       "remove the ipam section")
    if command == "CHECK":
        check_prev_result(config.get("prevResult"))


def check_prev_result(previous: Any) -> None:
    if not isinstance(previous, dict) or not isinstance(previous.get("ips", []), list) \
            or not all(isinstance(ip, dict) and isinstance(ip.get("address"), str)
                       for ip in previous.get("ips", [])):
        raise CniError(INVALID_CONFIG, "CHECK needs prevResult",
                       "prevResult: the ADD result, with ips[].address")


def is_http_url(value: Any) -> bool:
    if not isinstance(value, str) or len(value) > 2048:
        return False
    try:
        parts = urlsplit(value)
        parts.port  # noqa: B018  (raises ValueError for a port out of range)
    except ValueError:
        return False
    return parts.scheme in ("http", "https") and bool(parts.hostname)


def parse(env: Mapping[str, str], stdin: bytes) -> Request:
    """The request; raises CniError with the specification's codes."""
    command = env.get("CNI_COMMAND", "")
    if command not in COMMANDS:
        raise CniError(INVALID_ENVIRONMENT, "invalid CNI_COMMAND",
                       f"CNI_COMMAND={command[:40]!r} is not ADD, DEL, CHECK or VERSION")
    config = decode_config(stdin)
    if command == "VERSION":
        return Request(command, "", "", "", config)
    required = ["CNI_CONTAINERID", "CNI_IFNAME"] + ([] if command == "DEL" else ["CNI_NETNS"])
    missing = [name for name in required if not env.get(name)]
    if missing:
        raise CniError(INVALID_ENVIRONMENT, "missing environment variables",
                       ", ".join(missing))
    container, ifname, path = env["CNI_CONTAINERID"], env["CNI_IFNAME"], \
        env.get("CNI_NETNS", "")
    check_container_id(container)
    check_ifname(ifname)
    if path or command != "DEL":
        check_netns(path)
    if not OWNER_NAME.fullmatch(owner_of(container, ifname)):
        raise CniError(INVALID_ENVIRONMENT, "CNI_CONTAINERID is too long",
                       f"meshlet's IPAM holds the address as 'cni-CONTAINERID-IFNAME', "
                       f"at most 128 characters; the id has {len(container)}")
    check_config(command, config)
    return Request(command, container, path, ifname, config)

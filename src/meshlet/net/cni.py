"""`meshlet-cni`: a CNI 1.0.0 plugin for meshlet's bridge networks, so container
runtimes can put containers on them. Addresses come from meshlet's IPAM (the network's
pool in the control plane), the links from the bridge driver.

Network configuration (standard input)::

    {"cniVersion": "1.0.0", "name": "front", "type": "meshlet",
     "server": "http://127.0.0.1:8470", "network": "front"}

``network`` defaults to ``name``; ``server`` to MESHLET_ADDR or the default API
address; ``token`` (an ACL token with network write on it) to MESHLET_TOKEN. The
network must exist (`meshlet network create`). ADD, DEL, CHECK and VERSION are
implemented; DEL is idempotent and best-effort, as the spec asks.
"""

from __future__ import annotations

import json
import os
import sys
import urllib.error
import urllib.request
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

from pyroute2 import IPRoute

from meshlet import errors
from meshlet.errors import MeshletError, NotFound, Unavailable
from meshlet.net import bridge, netns

VERSION = "1.0.0"
SUPPORTED = ["1.0.0"]
ENV_ERROR, DECODE_ERROR, CONFIG_ERROR, TRY_AGAIN, VERSION_ERROR, IO_ERROR = 4, 6, 7, 11, 1, 5
CONTAINER_UNKNOWN = 3


class CniError(Exception):
    def __init__(self, code: int, msg: str, details: str = "") -> None:
        super().__init__(msg)
        self.code = code
        self.msg = msg
        self.details = details

    def result(self, version: str) -> dict[str, Any]:
        return {"cniVersion": version, "code": self.code, "msg": self.msg,
                "details": self.details}


@dataclass(frozen=True)
class Request:
    command: str
    container: str
    netns: str
    ifname: str
    config: dict[str, Any]

    @property
    def network(self) -> str:
        return str(self.config.get("network") or self.config["name"])

    @property
    def owner(self) -> str:
        """Who holds the address in meshlet's IPAM: one per (container, interface)."""
        return f"cni-{self.container}-{self.ifname}"

    @property
    def token(self) -> str | None:
        token = self.config.get("token") or os.environ.get("MESHLET_TOKEN")
        return str(token) if token else None

    @property
    def server(self) -> str:
        return str(self.config.get("server") or os.environ.get("MESHLET_ADDR")
                   or "http://127.0.0.1:8470")


def parse(env: dict[str, str], stdin: str) -> Request:
    """The request; raises CniError with the spec's codes."""
    command = env.get("CNI_COMMAND", "")
    if command not in ("ADD", "DEL", "CHECK", "VERSION"):
        raise CniError(ENV_ERROR, "invalid CNI_COMMAND",
                       f"CNI_COMMAND={command!r} is not ADD, DEL, CHECK or VERSION")
    try:
        config = json.loads(stdin) if stdin.strip() else {}
    except ValueError as exc:
        raise CniError(DECODE_ERROR, "cannot decode the network configuration",
                       str(exc)) from None
    if not isinstance(config, dict):
        raise CniError(DECODE_ERROR, "the network configuration is not an object")
    if command == "VERSION":
        return Request(command, "", "", "", config)
    version = config.get("cniVersion")
    if version not in SUPPORTED:
        raise CniError(VERSION_ERROR, "incompatible CNI version",
                       f"cniVersion {version!r}; supported: {', '.join(SUPPORTED)}")
    if not isinstance(config.get("name"), str) or not config["name"]:
        raise CniError(CONFIG_ERROR, "invalid network configuration", "name is required")
    required = ["CNI_CONTAINERID", "CNI_IFNAME"] + ([] if command == "DEL" else ["CNI_NETNS"])
    missing = [name for name in required if not env.get(name)]
    if missing:
        raise CniError(ENV_ERROR, "missing environment variables", ", ".join(missing))
    return Request(command, env["CNI_CONTAINERID"], env.get("CNI_NETNS", ""),
                   env["CNI_IFNAME"], config)


def call(server: str, method: str, path: str, token: str | None = None) -> Any:
    """One request to the meshlet API, sent once (urllib: no aiohttp to import, which
    would double the plugin's start-up time); raises MeshletError."""
    req = urllib.request.Request(server.rstrip("/") + path, method=method,
                                 headers={"X-Meshlet-Token": token} if token else {})
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return json.loads(resp.read() or b"null")
    except urllib.error.HTTPError as exc:
        try:
            error = json.loads(exc.read())["error"]
        except (ValueError, KeyError, TypeError):
            raise MeshletError(f"{method} {path}: HTTP {exc.code}") from None
        raise errors.from_dict(error) from None
    except (urllib.error.URLError, OSError) as exc:
        raise Unavailable(f"cannot reach meshlet at {server}: {exc}") from None


def link_mac(ip: IPRoute, name: str) -> str:
    found = ip.link_lookup(ifname=name)
    return str(ip.get_links(found[0])[0].get_attr("IFLA_ADDRESS")) if found else ""


def address_path(req: Request) -> str:
    return f"/v1/networks/{quote(req.network, safe='')}/addresses/{quote(req.owner, safe='')}"


def add(req: Request) -> dict[str, Any]:
    if not os.path.exists(req.netns):
        raise CniError(CONTAINER_UNKNOWN, "no such network namespace", req.netns)
    if has_interface(req.netns, req.ifname):
        raise CniError(CONFIG_ERROR, "interface exists",
                       f"{req.ifname} already exists in {req.netns}")
    info = network_info(req)
    got = call(req.server, "PUT", address_path(req), req.token)
    prefix = int(info["subnet"].split("/")[1])
    gateway = got["gateway"]
    att = bridge.Attachment(req.network, req.owner, req.netns, req.ifname, got["address"],
                            prefix, gateway)
    bridge.ensure_bridge(req.network, gateway, prefix)
    bridge.attach(att)
    return result(req, att)


def result(req: Request, att: bridge.Attachment) -> dict[str, Any]:
    """The ADD result (CNI 1.0.0 section 5): bridge, host veth, container interface."""
    with IPRoute() as ip:
        host = [{"name": bridge.bridge_name(att.network),
                 "mac": link_mac(ip, bridge.bridge_name(att.network))},
                {"name": bridge.veth_name(att.network, att.workload),
                 "mac": link_mac(ip, bridge.veth_name(att.network, att.workload))}]
    with netns.inside(req.netns), IPRoute() as ns:
        inside = {"name": att.ifname, "mac": link_mac(ns, att.ifname), "sandbox": req.netns}
    ips: dict[str, Any] = {"address": f"{att.address}/{att.prefix}", "interface": 2}
    routes = []
    if att.gateway is not None:
        ips["gateway"] = att.gateway
        routes.append({"dst": "0.0.0.0/0", "gw": att.gateway})
    return {"cniVersion": req.config["cniVersion"], "interfaces": [*host, inside],
            "ips": [ips], "routes": routes, "dns": {}}


def has_interface(path: str, ifname: str) -> bool:
    with netns.inside(path), IPRoute() as ns:
        return bool(ns.link_lookup(ifname=ifname))


def addresses_inside(path: str, ifname: str) -> list[str]:
    with netns.inside(path), IPRoute() as ns:
        found = ns.link_lookup(ifname=ifname)
        if not found:
            return []
        return [f"{a.get_attr('IFA_ADDRESS')}/{a['prefixlen']}"
                for a in ns.get_addr(index=found[0], family=2)]


def network_info(req: Request) -> dict[str, Any]:
    name = req.network
    try:
        info: dict[str, Any] = call(req.server, "GET", f"/v1/networks/{quote(name, safe='')}",
                                     req.token)
    except NotFound:
        raise CniError(CONFIG_ERROR, "no such meshlet network",
                       f"create it first: meshlet network create {name}") from None
    if info["driver"] != "bridge":
        raise CniError(CONFIG_ERROR, "unsupported network driver",
                       f"network {name!r} uses {info['driver']}; meshlet-cni does bridge")
    return info


def delete(req: Request) -> None:
    """Best effort and idempotent: release the address, remove the veth pair."""
    bridge.detach(req.network, req.owner)
    try:
        call(req.server, "DELETE", address_path(req), req.token)
    except NotFound:
        pass  # the network is gone, and its addresses with it


def check(req: Request) -> None:
    previous = req.config.get("prevResult")
    if not isinstance(previous, dict):
        raise CniError(CONFIG_ERROR, "CHECK needs prevResult")
    have = addresses_inside(req.netns, req.ifname)
    if not have:
        raise CniError(CONTAINER_UNKNOWN, "interface missing",
                       f"{req.ifname} is not in {req.netns}")
    wanted = [ip["address"] for ip in previous.get("ips", [])]
    missing = [a for a in wanted if a not in have]
    if missing:
        raise CniError(CONFIG_ERROR, "address missing",
                       f"{', '.join(missing)} not on {req.ifname}")
    info = network_info(req)
    held = info["addresses"].get(req.owner)
    if held is None or f"{held}/{info['subnet'].split('/')[1]}" not in wanted:
        raise CniError(CONFIG_ERROR, "address not reserved",
                       f"meshlet holds no address on {req.network!r} for {req.owner}")


def run(req: Request) -> dict[str, Any] | None:
    if req.command == "VERSION":
        return {"cniVersion": req.config.get("cniVersion", VERSION),
                "supportedVersions": SUPPORTED}
    try:
        if req.command == "ADD":
            return add(req)
        if req.command == "DEL":
            delete(req)
        else:
            check(req)
    except MeshletError as exc:
        raise CniError(TRY_AGAIN, "meshlet refused or could not be reached",
                       str(exc)) from None
    except OSError as exc:
        raise CniError(IO_ERROR, "system call failed", str(exc)) from None
    return None


def main() -> None:
    stdin = sys.stdin.read() if not sys.stdin.isatty() else ""
    version = VERSION
    try:
        req = parse(dict(os.environ), stdin)
        version = str(req.config.get("cniVersion") or VERSION)
        out = run(req)
    except CniError as exc:
        json.dump(exc.result(version), sys.stdout)
        sys.stdout.write("\n")
        sys.exit(1)
    if out is not None:
        json.dump(out, sys.stdout)
        sys.stdout.write("\n")

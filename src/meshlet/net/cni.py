"""`meshlet-cni`: a CNI 1.0.0 plugin for meshlet's bridge networks, so container
runtimes can put containers on them. Addresses come from meshlet's IPAM (the network's
pool in the control plane), the links from the bridge driver.

Network configuration (standard input)::

    {"cniVersion": "1.0.0", "name": "front", "type": "meshlet",
     "server": "http://127.0.0.1:8470", "network": "front"}

``network`` defaults to ``name``; ``server`` to MESHLET_ADDR or the default API
address. The network must exist (`meshlet network create`). ADD, DEL, CHECK and
VERSION are implemented; DEL is idempotent and best-effort, as the spec asks.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
from dataclasses import dataclass
from typing import Any

from pyroute2 import IPRoute

from meshlet.api.client import Client
from meshlet.errors import MeshletError, NotFound
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


def link_mac(ip: IPRoute, name: str) -> str:
    found = ip.link_lookup(ifname=name)
    return str(ip.get_links(found[0])[0].get_attr("IFLA_ADDRESS")) if found else ""


async def add(req: Request) -> dict[str, Any]:
    if not os.path.exists(req.netns):
        raise CniError(CONTAINER_UNKNOWN, "no such network namespace", req.netns)
    if await asyncio.to_thread(has_interface, req.netns, req.ifname):
        raise CniError(CONFIG_ERROR, "interface exists",
                       f"{req.ifname} already exists in {req.netns}")
    async with Client(req.server) as client:
        info = await network_info(client, req.network)
        got = await client.address_assign(req.network, req.owner)
    prefix = int(info["subnet"].split("/")[1])
    gateway = got["gateway"]
    att = bridge.Attachment(req.network, req.owner, req.netns, req.ifname, got["address"],
                            prefix, gateway)
    await asyncio.to_thread(bridge.ensure_bridge, req.network, gateway, prefix)
    await asyncio.to_thread(bridge.attach, att)
    return await asyncio.to_thread(result, req, att)


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


async def network_info(client: Client, name: str) -> dict[str, Any]:
    try:
        info = await client.network(name)
    except NotFound:
        raise CniError(CONFIG_ERROR, "no such meshlet network",
                       f"create it first: meshlet network create {name}") from None
    if info["driver"] != "bridge":
        raise CniError(CONFIG_ERROR, "unsupported network driver",
                       f"network {name!r} uses {info['driver']}; meshlet-cni does bridge")
    return info


async def delete(req: Request) -> None:
    """Best effort and idempotent: release the address, remove the veth pair."""
    await asyncio.to_thread(bridge.detach, req.network, req.owner)
    try:
        async with Client(req.server) as client:
            await client.address_release(req.network, req.owner)
    except NotFound:
        pass  # the network is gone, and its addresses with it


async def check(req: Request) -> None:
    previous = req.config.get("prevResult")
    if not isinstance(previous, dict):
        raise CniError(CONFIG_ERROR, "CHECK needs prevResult")
    have = await asyncio.to_thread(addresses_inside, req.netns, req.ifname)
    if not have:
        raise CniError(CONTAINER_UNKNOWN, "interface missing",
                       f"{req.ifname} is not in {req.netns}")
    wanted = [ip["address"] for ip in previous.get("ips", [])]
    missing = [a for a in wanted if a not in have]
    if missing:
        raise CniError(CONFIG_ERROR, "address missing",
                       f"{', '.join(missing)} not on {req.ifname}")
    async with Client(req.server) as client:
        info = await network_info(client, req.network)
    held = info["addresses"].get(req.owner)
    if held is None or f"{held}/{info['subnet'].split('/')[1]}" not in wanted:
        raise CniError(CONFIG_ERROR, "address not reserved",
                       f"meshlet holds no address on {req.network!r} for {req.owner}")


async def run(req: Request) -> dict[str, Any] | None:
    if req.command == "VERSION":
        return {"cniVersion": req.config.get("cniVersion", VERSION),
                "supportedVersions": SUPPORTED}
    try:
        if req.command == "ADD":
            return await add(req)
        if req.command == "DEL":
            await delete(req)
        else:
            await check(req)
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
        out = asyncio.run(run(req))
    except CniError as exc:
        json.dump(exc.result(version), sys.stdout)
        sys.stdout.write("\n")
        sys.exit(1)
    if out is not None:
        json.dump(out, sys.stdout)
        sys.stdout.write("\n")

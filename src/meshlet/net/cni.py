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

The request is checked whole first (``cni_request``: names, sizes, the error codes);
then the namespace: it must be a network namespace, and not the host's own. An ADD for
a container interface (``cni-CONTAINER-IFNAME``) that already holds an address lease on
the network, or whose host-side veth exists, is refused before anything is made (code
103): those belong to an earlier ADD, maybe into another namespace. An ADD that fails
part-way undoes what it made, and only that, last first: the veth pair, a bridge it
created, the address lease. Every failure is answered as the specification's error JSON on
standard output with a non-zero exit, never as a traceback.
"""

from __future__ import annotations

import json
import os
import sys
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any
from urllib.parse import quote

from pyroute2 import IPRoute
from pyroute2.netlink.exceptions import NetlinkError

from meshlet import errors
from meshlet.errors import ConfigError, Conflict, MeshletError, NetworkError, NotFound, Unavailable
from meshlet.net import bridge, netns
from meshlet.net.cni_request import (
    ALREADY_ATTACHED,
    INTERNAL_ERROR,
    INVALID_CONFIG,
    INVALID_ENVIRONMENT,
    IO_FAILURE,
    IPAM_FAILURE,
    MAX_CONFIG_BYTES,
    NETLINK_FAILURE,
    SUPPORTED,
    TRY_AGAIN,
    UNKNOWN_CONTAINER,
    VERSION,
    CniError,
    Request,
    parse,
)

DEFAULT_SERVER = "http://127.0.0.1:8470"
MAX_ANSWER_BYTES = 4 << 20  # an API answer larger than this is not meshlet's


def server_of(req: Request) -> str:
    return req.server(os.environ.get("MESHLET_ADDR") or DEFAULT_SERVER)


def token_of(req: Request) -> str | None:
    """The ACL token (network write) from the configuration, else MESHLET_TOKEN."""
    token = req.config.get("token") or os.environ.get("MESHLET_TOKEN")
    return str(token) if token else None


def call(server: str, method: str, path: str, token: str | None = None) -> Any:
    """One request to the meshlet API, sent once (urllib: no aiohttp to import, which
    would double the plugin's start-up time); raises MeshletError."""
    req = urllib.request.Request(server.rstrip("/") + path, method=method,
                                 headers={"X-Meshlet-Token": token} if token else {})
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return json.loads(resp.read(MAX_ANSWER_BYTES) or b"null")
    except urllib.error.HTTPError as exc:
        try:
            error = json.loads(exc.read(MAX_ANSWER_BYTES))["error"]
        except (ValueError, KeyError, TypeError):
            raise MeshletError(f"{method} {path}: HTTP {exc.code}") from None
        raise errors.from_dict(error) from None
    except (urllib.error.URLError, OSError) as exc:
        raise Unavailable(f"cannot reach meshlet at {server}: {exc}") from None
    except ValueError as exc:
        raise Unavailable(f"{method} {path}: not a meshlet answer: {exc}") from None


def link_mac(ip: IPRoute, name: str) -> str:
    found = ip.link_lookup(ifname=name)
    return str(ip.get_links(found[0])[0].get_attr("IFLA_ADDRESS")) if found else ""


def address_path(req: Request) -> str:
    return f"/v1/networks/{quote(req.network, safe='')}/addresses/{quote(req.owner, safe='')}"


def check_namespace(path: str) -> None:
    """The container's namespace: it must exist, be a network namespace, and not be the
    host's (an ADD there would rename and re-address the host's own interfaces)."""
    try:
        found = netns.network_namespace_id(path)
    except FileNotFoundError:
        raise CniError(UNKNOWN_CONTAINER, "no such network namespace", path) from None
    except OSError as exc:
        raise CniError(INVALID_ENVIRONMENT, "invalid CNI_NETNS",
                       f"cannot open {path}: {exc.strerror}") from None
    if found is None:
        raise CniError(INVALID_ENVIRONMENT, "invalid CNI_NETNS",
                       f"{path} is not a network namespace")
    if found in netns.host_namespace_ids():
        raise CniError(INVALID_ENVIRONMENT, "invalid CNI_NETNS",
                       f"{path} is the host's own network namespace; meshlet-cni "
                       "configures only a container's")


class Undo:
    """What an ADD has made so far, undone last first if it fails."""

    def __init__(self) -> None:
        self.steps: list[tuple[str, Callable[[], None]]] = []

    def __repr__(self) -> str:
        return f"<Undo {[name for name, _ in self.steps]}>"

    def push(self, name: str, step: Callable[[], None]) -> None:
        self.steps.append((name, step))

    def run(self) -> list[str]:
        """Undo everything; returns what could not be undone."""
        failed = []
        for name, step in reversed(self.steps):
            try:
                step()
            except Exception as exc:  # keep undoing the rest
                failed.append(f"{name}: {exc}")
        self.steps.clear()
        return failed


@contextmanager
def rolled_back_on_failure() -> Iterator[Undo]:
    undo = Undo()
    try:
        yield undo
    except BaseException as exc:
        failed = undo.run()
        if failed:  # said in the error's details (``with_notes``)
            exc.add_note("not undone: " + "; ".join(failed))
        raise


def with_notes(exc: BaseException, details: str) -> str:
    return "; ".join([details, *getattr(exc, "__notes__", [])])


def add(req: Request) -> dict[str, Any]:
    check_namespace(req.netns)
    if has_interface(req.netns, req.ifname):
        raise CniError(INVALID_CONFIG, "interface exists",
                       f"{req.ifname} already exists in {req.netns}")
    info = network_info(req)
    refuse_if_attached(req, info)
    server = server_of(req)
    with rolled_back_on_failure() as undo:
        # Before asking: an answer lost on its way back may still have leased one, and
        # it is ours (the owner held none a moment ago, see refuse_if_attached).
        undo.push("release the address", lambda: release(req))
        got = call(server, "PUT", address_path(req), token_of(req))
        prefix = int(info["subnet"].split("/")[1])
        gateway = got["gateway"]
        att = bridge.Attachment(req.network, req.owner, req.netns, req.ifname,
                                got["address"], prefix, gateway)
        if not bridge.link_exists(bridge.bridge_name(req.network)):
            undo.push("remove the bridge", lambda: bridge.remove_bridge_if_unused(
                req.network))
        bridge.ensure_bridge(req.network, gateway, prefix)
        undo.push("remove the veth pair", lambda: bridge.detach(req.network, req.owner))
        bridge.attach(att)
        return result(req, att)


def refuse_if_attached(req: Request, info: dict[str, Any]) -> None:
    """Raise CniError (103) if this container's interface already holds a lease on the
    network or its host-side veth exists: an earlier ADD made them (maybe into another
    namespace), and this one must neither reuse them nor undo them when it fails."""
    held = info["addresses"].get(req.owner)
    if held is not None:
        raise CniError(ALREADY_ATTACHED, "already attached",
                       f"{req.owner} already holds {held} on network {req.network!r}; "
                       "DEL it first")
    host_end = bridge.veth_name(req.network, req.owner)
    if bridge.link_exists(host_end):
        raise CniError(ALREADY_ATTACHED, "already attached",
                       f"veth {host_end} of {req.owner} on network {req.network!r} "
                       "exists already; DEL it first")


def release(req: Request) -> None:
    try:
        call(server_of(req), "DELETE", address_path(req), token_of(req))
    except NotFound:
        pass  # the network is gone, and its addresses with it


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
    return {"cniVersion": req.version, "interfaces": [*host, inside],
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
        info: dict[str, Any] = call(server_of(req), "GET",
                                    f"/v1/networks/{quote(name, safe='')}", token_of(req))
    except NotFound:
        raise CniError(INVALID_CONFIG, "no such meshlet network",
                       f"create it first: meshlet network create {name}") from None
    if info["driver"] != "bridge":
        raise CniError(INVALID_CONFIG, "unsupported network driver",
                       f"network {name!r} uses {info['driver']}; meshlet-cni does bridge")
    return info


def delete(req: Request) -> None:
    """Best effort and idempotent: remove the veth pair, release the address."""
    bridge.detach(req.network, req.owner)
    release(req)


def check(req: Request) -> None:
    check_namespace(req.netns)
    have = addresses_inside(req.netns, req.ifname)
    if not have:
        raise CniError(UNKNOWN_CONTAINER, "interface missing",
                       f"{req.ifname} is not in {req.netns}")
    wanted = [ip["address"] for ip in req.config["prevResult"].get("ips", [])]
    missing = [a for a in wanted if a not in have]
    if missing:
        raise CniError(INVALID_CONFIG, "address missing",
                       f"{', '.join(missing)} not on {req.ifname}")
    info = network_info(req)
    held = info["addresses"].get(req.owner)
    if held is None or f"{held}/{info['subnet'].split('/')[1]}" not in wanted:
        raise CniError(INVALID_CONFIG, "address not reserved",
                       f"meshlet holds no address on {req.network!r} for {req.owner}")


def run(req: Request) -> dict[str, Any] | None:
    """Do the request; raises CniError, each foreign failure translated to its code."""
    if req.command == "VERSION":
        return {"cniVersion": req.version, "supportedVersions": list(SUPPORTED)}
    try:
        if req.command == "ADD":
            return add(req)
        if req.command == "DEL":
            delete(req)
        else:
            check(req)
    except CniError as exc:
        exc.details = with_notes(exc, exc.details)
        raise
    except (ConfigError, Conflict) as exc:  # the pool is full, the address is taken
        raise CniError(IPAM_FAILURE, "meshlet's IPAM refused the address",
                       with_notes(exc, exc.message)) from None
    except NetworkError as exc:  # a link missing or misplaced (bridge.attach)
        raise CniError(NETLINK_FAILURE, "the kernel refused a network change",
                       with_notes(exc, exc.message)) from None
    except MeshletError as exc:
        raise CniError(TRY_AGAIN, "meshlet refused or could not be reached",
                       with_notes(exc, exc.message)) from None
    except NetlinkError as exc:
        raise CniError(NETLINK_FAILURE, "the kernel refused a network change", with_notes(
            exc, f"netlink error {exc.code}: {os.strerror(exc.code)}")) from None
    except OSError as exc:
        raise CniError(IO_FAILURE, "system call failed", with_notes(exc, str(exc))) from None
    return None


def answer(env: dict[str, str], stdin: bytes) -> tuple[int, dict[str, Any] | None]:
    """The exit code and what to print, for one invocation; never raises."""
    version = VERSION
    try:
        req = parse(env, stdin)
        version = req.version if req.version in SUPPORTED else VERSION
        return 0, run(req)
    except CniError as exc:
        return 1, exc.result(version)
    except Exception as exc:  # a bug: one line for the runtime, never a traceback
        return 1, CniError(INTERNAL_ERROR, "internal error in meshlet-cni",
                           f"{type(exc).__name__}: {exc}").result(version)


def main() -> None:
    out: dict[str, Any] | None
    try:
        stdin = b"" if sys.stdin is None or sys.stdin.isatty() \
            else sys.stdin.buffer.read(MAX_CONFIG_BYTES + 1)
    except OSError as exc:
        code, out = 1, CniError(IO_FAILURE, "cannot read the network configuration",
                                str(exc)).result(VERSION)
    else:
        code, out = answer(dict(os.environ), stdin)
    if out is not None:
        json.dump(out, sys.stdout)
        sys.stdout.write("\n")
    sys.exit(code)

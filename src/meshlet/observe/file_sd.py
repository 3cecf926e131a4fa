"""What Prometheus should scrape in a mesh, as a file_sd target list; pure.

``target_groups(members, nodes, instances)`` turns what the API says (the Raft members
of ``/v1/status``, ``/v1/nodes``, each service's instances) into Prometheus file_sd
groups, one target each:

- every server: its HTTP address (``/metrics`` is open on the API port), job
  ``meshlet-server``, ``meshlet_instance`` its server id;
- every agent that registered a metrics address with its node: job ``meshlet-agent``,
  ``meshlet_node`` its node;
- every sidecar, at its instance's ``meta.metrics`` URL: job ``meshlet-sidecar``,
  ``meshlet_node``, ``meshlet_service`` and ``meshlet_instance``.

An https target carries ``__scheme__: https``, and a URL with a path carries
``__metrics_path__``. ``meta`` is what whoever registered the instance wrote, so a
``meta.metrics`` that is no plain ``http(s)://HOST:PORT[/PATH]`` is left out, not
trusted. ``render`` gives the bytes to write, the same for the same mesh (sorted, so
the file changes only when the targets do).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

SERVER_JOB = "meshlet-server"
AGENT_JOB = "meshlet-agent"
SIDECAR_JOB = "meshlet-sidecar"
METRICS_PATH = "/metrics"
# A host (a name, an IPv4 address, or [IPv6]) and a port; then an optional plain path.
_URL = re.compile(r"(?P<scheme>https?)://(?P<host>[A-Za-z0-9.-]+|\[[0-9A-Fa-f:.]+\])"
                  r":(?P<port>[0-9]{1,5})(?P<path>(/[A-Za-z0-9._~!$&'()*+,;=:@%-]*)*)")
_HOSTPORT = re.compile(r"(?P<host>[A-Za-z0-9.-]+|\[[0-9A-Fa-f:.]+\]):(?P<port>[0-9]{1,5})")

Group = dict[str, Any]  # {"targets": ["HOST:PORT"], "labels": {name: value}}


@dataclass(frozen=True, order=True)
class Target:
    """One endpoint to scrape and its labels."""

    job: str
    address: str   # HOST:PORT
    scheme: str = "http"
    path: str = METRICS_PATH
    node: str = ""
    service: str = ""
    instance: str = ""

    def group(self) -> Group:
        labels = {"job": self.job}
        for name, value in (("meshlet_node", self.node), ("meshlet_service", self.service),
                            ("meshlet_instance", self.instance)):
            if value:
                labels[name] = value
        if self.scheme != "http":
            labels["__scheme__"] = self.scheme
        if self.path != METRICS_PATH:
            labels["__metrics_path__"] = self.path
        return {"targets": [self.address], "labels": labels}


def parse_url(url: object) -> tuple[str, str, str] | None:
    """``(scheme, HOST:PORT, metrics path)`` of a base URL (``/metrics`` appended to
    its path), or None if it is not a plain http(s) URL with a port."""
    if not isinstance(url, str):
        return None
    found = _URL.fullmatch(url)
    if found is None or not 0 < int(found["port"]) < 65536:
        return None
    path = found["path"].rstrip("/") + METRICS_PATH
    return found["scheme"], f"{found['host']}:{int(found['port'])}", path


def parse_address(address: object) -> str | None:
    """``HOST:PORT`` as a node registers its agent's metrics, or None."""
    if not isinstance(address, str):
        return None
    found = _HOSTPORT.fullmatch(address)
    if found is None or not 0 < int(found["port"]) < 65536:
        return None
    return f"{found['host']}:{int(found['port'])}"


def server_targets(members: Iterable[Mapping[str, Any]]) -> list[Target]:
    found = []
    for member in members:
        parsed = parse_url(member.get("http"))
        if parsed is not None:
            scheme, address, path = parsed
            found.append(Target(SERVER_JOB, address, scheme, path,
                                instance=str(member.get("id", ""))))
    return found


def agent_targets(nodes: Iterable[Mapping[str, Any]]) -> list[Target]:
    found = []
    for node in nodes:
        address = parse_address(node.get("metrics"))
        if address is not None:
            found.append(Target(AGENT_JOB, address, node=str(node.get("name", ""))))
    return found


def sidecar_targets(instances: Iterable[Mapping[str, Any]]) -> list[Target]:
    found = []
    for inst in instances:
        meta = inst.get("meta")
        parsed = parse_url(meta.get("metrics")) if isinstance(meta, Mapping) else None
        if parsed is not None:
            scheme, address, path = parsed
            found.append(Target(SIDECAR_JOB, address, scheme, path,
                                node=str(inst.get("node") or ""),
                                service=str(inst.get("service", "")),
                                instance=str(inst.get("id", ""))))
    return found


def target_groups(members: Iterable[Mapping[str, Any]], nodes: Iterable[Mapping[str, Any]],
                  instances: Iterable[Mapping[str, Any]]) -> list[Group]:
    """Every server, agent and sidecar target, servers first, each kind sorted; a target
    listed twice (the same job, address and path) is kept once."""
    kinds = (server_targets(members), agent_targets(nodes), sidecar_targets(instances))
    groups: list[Group] = []
    seen: set[tuple[str, str, str, str]] = set()
    for targets in kinds:
        for target in sorted(targets, key=lambda t: (t.node, t.service, t.instance, t)):
            key = (target.job, target.scheme, target.address, target.path)
            if key not in seen:
                seen.add(key)
                groups.append(target.group())
    return groups


def render(groups: list[Group]) -> bytes:
    """The file's bytes: JSON, indented, one trailing newline."""
    return (json.dumps(groups, indent=2, sort_keys=True) + "\n").encode()

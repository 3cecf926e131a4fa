"""The sans-IO cores import no sockets, clocks, threads, randomness or OS access."""

from __future__ import annotations

import ast
from pathlib import Path

import meshlet

BANNED = {"asyncio", "socket", "time", "random", "os", "threading", "subprocess", "aiohttp",
          "httptools", "uvloop", "select", "selectors"}
SRC = Path(meshlet.__file__).parent
PURE = [*sorted((SRC / "state").glob("*.py")), *sorted((SRC / "proxy" / "lb").glob("*.py")),
        *sorted((SRC / "proxy" / "resilience").glob("*.py")),
        SRC / "agent" / "health.py", SRC / "agent" / "backoff.py", SRC / "backoff.py",
        SRC / "agent" / "network_plan.py", SRC / "agent" / "cluster_view.py",
        SRC / "agent" / "sidecar_config.py", SRC / "proxy" / "config.py",
        SRC / "proxy" / "partition.py", SRC / "proxy" / "pool.py",
        SRC / "proxy" / "settings.py", SRC / "settings_rules.py", SRC / "intention_rules.py",
        SRC / "durations.py", SRC / "quantities.py", SRC / "restart_policy.py",
        SRC / "runtime" / "oci_spec.py", SRC / "image" / "config.py",
        SRC / "image" / "reference.py",
        SRC / "json_limits.py",
        SRC / "image" / "reference.py", SRC / "image" / "config.py",
        SRC / "observe" / "exposition.py", SRC / "proxy" / "routing.py",
        SRC / "proxy" / "request_view.py",
        SRC / "proxy" / "plain_head.py", SRC / "raft" / "core.py", SRC / "raft" / "interfaces.py",
        SRC / "raft" / "memory.py", SRC / "raft" / "entry.py", SRC / "raft" / "entry_log.py",
        SRC / "net" / "ipam.py",
        SRC / "net" / "overlay_plan.py", SRC / "net" / "names.py", SRC / "net" / "dns.py",
        SRC / "net" / "cni_request.py",
        SRC / "api" / "kv_put_request.py", SRC / "api" / "watch_request.py",
        SRC / "security" / "acl.py",
        SRC / "security" / "ca.py", SRC / "security" / "identity.py",
        SRC / "deploy" / "kube.py", SRC / "kube_objects.py",
        SRC / "deploy" / "rollout_status.py",
        SRC / "deploy" / "autoscaler.py", SRC / "deploy" / "capacity.py",
        SRC / "observe" / "samples.py", SRC / "observe" / "signals.py",
        SRC / "deploy" / "reconciler.py",
        SRC / "deploy" / "placement.py", SRC / "deploy" / "published.py",
        SRC / "observe" / "file_sd.py"]


def runtime_nodes(tree: ast.AST) -> list[ast.AST]:
    """Every node except those under ``if TYPE_CHECKING:`` (imports for annotations)."""
    found: list[ast.AST] = []
    stack = [tree]
    while stack:
        node = stack.pop()
        if isinstance(node, ast.If) and isinstance(node.test, ast.Name) \
                and node.test.id == "TYPE_CHECKING":
            stack.extend(node.orelse)
            continue
        found.append(node)
        stack.extend(ast.iter_child_nodes(node))
    return found


def imported_modules(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    names: set[str] = set()
    for node in runtime_nodes(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module.split(".")[0])
    return names


def test_pure_cores_import_no_io() -> None:
    offenders = {str(p.relative_to(SRC)): sorted(imported_modules(p) & BANNED) for p in PURE}
    assert {k: v for k, v in offenders.items() if v} == {}
    assert len(PURE) > 8

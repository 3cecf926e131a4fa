"""`meshlet rollout status|undo` decided from a stored Deployment record (as the API
returns it), as kubectl decides them. Pure.

``progress(record)`` says whether the rollout is done, and the line kubectl prints
while it waits. Done is: the controller has observed this generation
(``status.observedGeneration >= generation``) and ``status.updatedReplicas`` and
``status.readyReplicas`` both equal ``spec.replicas``. A rollout the controller marked
failed (condition ``Progressing`` with status ``False``) is an error with the
condition's message.

``undo(record, to_revision)`` is the manifest that rolls back: the current one with
the pod template of the revision asked for (0: the one before the newest).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any

from meshlet.errors import ConfigError, MeshletError, NotFound


@dataclass(frozen=True)
class Progress:
    done: bool
    line: str


def condition(status: dict[str, Any], kind: str) -> dict[str, Any] | None:
    for found in status.get("conditions") or []:
        if isinstance(found, dict) and found.get("type") == kind:
            return found
    return None


def progress(record: dict[str, Any]) -> Progress:
    """Where the Deployment's rollout stands; raises MeshletError if it failed."""
    name, status = record["name"], record.get("status") or {}
    wanted = record["manifest"]["spec"]["replicas"]
    if status.get("observedGeneration", 0) < record["generation"]:
        return Progress(False, "Waiting for deployment spec update to be observed...")
    stuck = condition(status, "Progressing")
    if stuck is not None and stuck.get("status") == "False":
        why = stuck.get("message") or stuck.get("reason") or "the rollout failed"
        raise MeshletError(f"deployment {name!r} rollout failed: {why}")
    updated = status.get("updatedReplicas", 0)
    ready = status.get("readyReplicas", 0)
    total = status.get("replicas", 0)
    if updated == ready == wanted:
        return Progress(True, f'deployment "{name}" successfully rolled out')
    waiting = f'Waiting for deployment "{name}" rollout to finish: '
    if updated < wanted:
        return Progress(False, f"{waiting}{updated} out of {wanted} new replicas have "
                               "been updated...")
    if total > updated:
        return Progress(False, f"{waiting}{total - updated} old replicas are pending "
                               "termination...")
    return Progress(False, f"{waiting}{ready} of {updated} updated replicas are "
                           "available...")


def undo(record: dict[str, Any], to_revision: int = 0) -> tuple[dict[str, Any], int]:
    """(the manifest to apply, the revision it goes back to). Raises NotFound without
    such a revision, ConfigError when it is the template already running."""
    revisions = record.get("revisions") or []
    name = record["name"]
    if to_revision:
        chosen = next((r for r in revisions if r["revision"] == to_revision), None)
        if chosen is None:
            raise NotFound(f"unable to find the specified revision {to_revision} of "
                           f"deployment {name!r}", "to_revision")
    elif len(revisions) < 2:
        raise NotFound(f"no rollout history found for deployment {name!r}", "to_revision")
    else:
        chosen = revisions[-2]
    if chosen is revisions[-1]:
        raise ConfigError(f"skipped rollback (current template already matches revision "
                          f"{chosen['revision']})", "to_revision")
    manifest = copy.deepcopy(record["manifest"])
    manifest["spec"]["template"] = copy.deepcopy(chosen["template"])
    return manifest, int(chosen["revision"])

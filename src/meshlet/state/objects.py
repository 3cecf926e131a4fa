"""The objects table: the Kubernetes objects ``meshlet apply`` stored (the desired
state of Deployments, Services, Namespaces and autoscalers), keyed by (kind,
namespace, name), with what the controller observed of each. Pure.

The rules, in one place:

- An object's ``manifest`` is its canonical dict (``kube_objects``), validated again as
  the command applies, with ``metadata.namespace`` filled in ("default" when absent; a
  Namespace has none, and its key's namespace is ""). ``digest`` is the SHA-256 of its
  canonical JSON: an apply with the same digest is ``unchanged`` and changes nothing.
- ``generation`` is 1 on create and counts up whenever ``spec`` changes (apply or
  scale), as Kubernetes' ``metadata.generation``; labels and annotations do not count.
- A namespaced object needs its Namespace to exist; "default" always does and cannot
  be deleted. Deleting a Namespace deletes everything in it.
- A Service's name is unique across namespaces: the catalog it feeds is flat.
- A Deployment keeps ``revisions`` of its pod template, newest last: a new template is
  appended as the next revision; a template equal to an older revision's (a rollback)
  moves that revision to the newest with the next number, keeping its change cause, as
  Kubernetes does with ReplicaSets. Besides the newest, ``revisionHistoryLimit`` old ones
  are kept. The change cause is the ``kubernetes.io/change-cause`` annotation.
- ``status`` is written only by the controller (``ObjectStatus``): it replaces the old
  one; its events are appended, a repeat of the last one (same type, reason and
  message) counting up instead, and the last ``MAX_EVENTS`` kept.

Bounds: ``MAX_OBJECTS`` objects, ``MAX_MANIFEST_BYTES`` of canonical JSON each,
``MAX_STATUS_BYTES`` of status.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass, field
from typing import Any

from meshlet.errors import ConfigError, Conflict, NotFound
from meshlet.kube_objects import (
    KINDS,
    MAX_REPLICAS,
    Deployment,
    Namespace,
    Service,
    template_hash,
    validate_object,
)
from meshlet.state.commands import ObjectApply, ObjectDelete, ObjectScale, ObjectStatus

MAX_OBJECTS = 10_000
MAX_MANIFEST_BYTES = 128 * 1024
MAX_STATUS_BYTES = 64 * 1024
MAX_EVENTS = 50                 # kept per object, as `kubectl describe` shows them
MAX_EVENTS_PER_WRITE = 50
MAX_EVENT_TEXT = 1024
DEFAULT_NAMESPACE = "default"
CHANGE_CAUSE = "kubernetes.io/change-cause"
EVENT_TYPES = ("Normal", "Warning")

Key = tuple[str, str, str]     # (kind, namespace, name)


def canonical_json(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"))


def digest_of(manifest: dict[str, Any]) -> str:
    return hashlib.sha256(canonical_json(manifest).encode()).hexdigest()


@dataclass
class ObjectRecord:
    kind: str
    namespace: str
    name: str
    manifest: dict[str, Any]
    generation: int
    digest: str
    create_index: int
    modify_index: int
    status: dict[str, Any] = field(default_factory=dict)
    events: list[dict[str, Any]] = field(default_factory=list)
    revisions: list[dict[str, Any]] = field(default_factory=list)
    created: float = 0.0      # seconds since the epoch, as the API stamped the create

    @property
    def key(self) -> Key:
        return self.kind, self.namespace, self.name

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "namespace": self.namespace, "name": self.name,
                "manifest": self.manifest, "generation": self.generation,
                "digest": self.digest, "create_index": self.create_index,
                "modify_index": self.modify_index, "status": self.status,
                "events": list(self.events), "revisions": list(self.revisions),
                "created": self.created}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ObjectRecord:
        return cls(**d)


def _known_kind(kind: object) -> str:
    if not isinstance(kind, str) or kind not in KINDS:
        raise ConfigError(f"kind: {kind!r} is not one of {', '.join(KINDS)}", "kind")
    return kind


def _stored(manifest: object) -> tuple[Key, dict[str, Any], Any]:
    """The key, the manifest as stored and the validated object; raises ConfigError."""
    obj = validate_object(manifest)
    stored = obj.canonical()
    if isinstance(obj, Namespace):
        namespace = ""
    else:
        namespace = obj.namespace or DEFAULT_NAMESPACE
        stored["metadata"]["namespace"] = namespace
    size = len(canonical_json(stored).encode())
    if size > MAX_MANIFEST_BYTES:
        raise ConfigError(f"manifest: {size} bytes of canonical JSON; at most "
                          f"{MAX_MANIFEST_BYTES} are stored", "manifest")
    return (obj.kind, namespace, obj.name), stored, obj


def non_negative(value: object, at: str) -> float:
    """A finite number, 0 or more; raises ConfigError naming ``at``."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) \
            or not math.isfinite(value) or value < 0:
        raise ConfigError(f"{at}: a finite number, 0 or more", at)
    return float(value)


def _check_event(event: object, at: str) -> dict[str, Any]:
    if not isinstance(event, dict) or set(event) - {"time", "type", "reason", "message",
                                                    "count"}:
        raise ConfigError(f"{at}: expected {{time, type, reason, message, count}}", at)
    time, count = non_negative(event.get("time"), f"{at}.time"), event.get("count", 1)
    if event.get("type") not in EVENT_TYPES:
        raise ConfigError(f"{at}.type: Normal or Warning", f"{at}.type")
    for name in ("reason", "message"):
        text = event.get(name)
        if not isinstance(text, str) or len(text) > MAX_EVENT_TEXT:
            raise ConfigError(f"{at}.{name}: text of at most {MAX_EVENT_TEXT} characters",
                              f"{at}.{name}")
    if isinstance(count, bool) or not isinstance(count, int) or not 1 <= count < 2 ** 31:
        raise ConfigError(f"{at}.count: a count, 1 or more", f"{at}.count")
    return {"time": time, "type": event["type"], "reason": event["reason"],
            "message": event["message"], "count": count}


class ObjectTable:
    def __init__(self) -> None:
        self.objects: dict[Key, ObjectRecord] = {}
        self.index = 0
        self.kind_index: dict[str, int] = {}   # per kind: blocking queries on one kind

    def __repr__(self) -> str:
        return f"<ObjectTable {len(self.objects)} objects index={self.index}>"

    def get(self, kind: str, namespace: str, name: str) -> ObjectRecord:
        found = self.objects.get((kind, namespace, name))
        if found is None:
            where = f" in namespace {namespace!r}" if namespace else ""
            raise NotFound(f"{kind} {name!r} not found{where}", "name")
        return found

    def namespace_exists(self, namespace: str) -> bool:
        return namespace == DEFAULT_NAMESPACE or ("Namespace", "", namespace) in self.objects

    def select(self, kind: str | None = None, namespace: str | None = None
               ) -> list[ObjectRecord]:
        """Objects of ``kind`` in ``namespace`` (None: any), by key."""
        return [self.objects[k] for k in sorted(self.objects)
                if (kind is None or k[0] == kind) and (namespace is None or k[1] == namespace)]

    def _touch(self, index: int, kind: str) -> None:
        self.index = index
        self.kind_index[kind] = index

    # -- checks ---------------------------------------------------------------------------

    def check_apply(self, cmd: ObjectApply) -> None:
        non_negative(cmd.created, "created")
        key, _, obj = _stored(cmd.manifest)
        kind, namespace, name = key
        if kind != "Namespace" and not self.namespace_exists(namespace):
            raise NotFound(f"namespaces {namespace!r} not found (apply a Namespace "
                           f"first)", "metadata.namespace")
        if isinstance(obj, Service):
            rival = next((r for r in self.select("Service")
                          if r.name == name and r.namespace != namespace), None)
            if rival is not None:
                raise Conflict(f"Service {name!r} already exists in namespace "
                               f"{rival.namespace!r}: Service names are unique across "
                               "namespaces (the catalog is flat)", "metadata.name")
        if key not in self.objects and len(self.objects) >= MAX_OBJECTS:
            raise Conflict(f"the store holds {MAX_OBJECTS} objects, its most", "manifest")

    def check_delete(self, cmd: ObjectDelete) -> None:
        kind = _known_kind(cmd.kind)
        if kind == "Namespace" and cmd.name == DEFAULT_NAMESPACE:
            raise Conflict("namespace 'default' cannot be deleted", "name")
        self.get(kind, cmd.namespace, cmd.name)

    def check_scale(self, cmd: ObjectScale) -> None:
        if cmd.kind != "Deployment":
            raise ConfigError(f"kind: only a Deployment scales, not {cmd.kind!r}", "kind")
        replicas = cmd.replicas
        if isinstance(replicas, bool) or not isinstance(replicas, int) \
                or not 0 <= replicas <= MAX_REPLICAS:
            raise ConfigError(f"replicas: {replicas!r} is not 0..{MAX_REPLICAS}", "replicas")
        self.get(cmd.kind, cmd.namespace, cmd.name)

    def check_status(self, cmd: ObjectStatus) -> None:
        self.get(_known_kind(cmd.kind), cmd.namespace, cmd.name)
        if not isinstance(cmd.status, dict):
            raise ConfigError("status: expected an object", "status")
        if len(canonical_json(cmd.status).encode()) > MAX_STATUS_BYTES:
            raise ConfigError(f"status: at most {MAX_STATUS_BYTES} bytes of JSON", "status")
        if not isinstance(cmd.events, tuple) or len(cmd.events) > MAX_EVENTS_PER_WRITE:
            raise ConfigError(f"events: a list of at most {MAX_EVENTS_PER_WRITE}", "events")
        for i, event in enumerate(cmd.events):
            _check_event(event, f"events[{i}]")

    # -- apply ----------------------------------------------------------------------------

    def apply(self, index: int, cmd: ObjectApply) -> dict[str, Any]:
        key, stored, obj = _stored(cmd.manifest)
        digest = digest_of(stored)
        existing = self.objects.get(key)
        kind, namespace, name = key
        answer = {"kind": kind, "namespace": namespace, "name": name}
        if existing is not None and existing.digest == digest:
            return {**answer, "result": "unchanged", "generation": existing.generation}
        if existing is None:
            record = ObjectRecord(kind, namespace, name, stored, 1, digest, index, index,
                                  created=float(cmd.created))
            self.objects[key] = record
            result = "created"
        else:
            record = existing
            if stored.get("spec") != record.manifest.get("spec"):
                record.generation += 1
            record.manifest, record.digest, record.modify_index = stored, digest, index
            result = "configured"
        if isinstance(obj, Deployment):
            self._record_revision(record, obj)
        self._touch(index, kind)
        return {**answer, "result": result, "generation": record.generation}

    @staticmethod
    def _record_revision(record: ObjectRecord, deployment: Deployment) -> None:
        revisions = record.revisions
        wanted = template_hash(deployment)
        if revisions and revisions[-1]["template_hash"] == wanted:
            return
        number = max((r["revision"] for r in revisions), default=0) + 1
        older = next((r for r in revisions if r["template_hash"] == wanted), None)
        if older is not None:   # a rollback: that revision becomes the newest
            revisions.remove(older)
            cause = older["change_cause"]
        else:
            cause = deployment.metadata.annotations.get(CHANGE_CAUSE, "")
        revisions.append({"revision": number, "template_hash": wanted,
                          "template": record.manifest["spec"]["template"],
                          "change_cause": cause})
        del revisions[:-(deployment.spec.revision_history_limit + 1)]

    def delete(self, index: int, cmd: ObjectDelete) -> dict[str, Any]:
        gone = [self.objects.pop((cmd.kind, cmd.namespace, cmd.name))]
        if cmd.kind == "Namespace":
            gone += [self.objects.pop(r.key) for r in self.select(namespace=cmd.name)]
        for record in gone:
            self._touch(index, record.kind)
        return {"deleted": [{"kind": r.kind, "namespace": r.namespace, "name": r.name}
                            for r in gone]}

    def scale(self, index: int, cmd: ObjectScale) -> dict[str, Any]:
        record = self.get(cmd.kind, cmd.namespace, cmd.name)
        answer = {"kind": record.kind, "namespace": record.namespace, "name": record.name}
        if record.manifest["spec"]["replicas"] == cmd.replicas:
            return {**answer, "result": "unchanged", "generation": record.generation}
        manifest = json.loads(canonical_json(record.manifest))    # a copy to change
        manifest["spec"]["replicas"] = cmd.replicas
        record.manifest, record.digest = manifest, digest_of(manifest)
        record.generation += 1
        record.modify_index = index
        self._touch(index, record.kind)
        return {**answer, "result": "scaled", "generation": record.generation}

    def set_status(self, index: int, cmd: ObjectStatus) -> dict[str, Any]:
        record = self.get(cmd.kind, cmd.namespace, cmd.name)
        events = [_check_event(e, "event") for e in cmd.events]
        if cmd.status == record.status and not events:
            return record.to_dict()     # nothing new: watchers stay asleep
        record.status = json.loads(canonical_json(cmd.status))
        for event in events:
            last = record.events[-1] if record.events else None
            if last is not None and all(last[k] == event[k]
                                        for k in ("type", "reason", "message")):
                record.events[-1] = {**last, "time": event["time"],
                                     "count": min(last["count"] + event["count"],
                                                  2 ** 31 - 1)}
            else:
                record.events.append(event)
        del record.events[:-MAX_EVENTS]
        record.modify_index = index
        self._touch(index, record.kind)
        return record.to_dict()

    # -- snapshots ------------------------------------------------------------------------

    def dump(self) -> dict[str, Any]:
        return {"index": self.index, "kind_index": dict(sorted(self.kind_index.items())),
                "objects": [self.objects[k].to_dict() for k in sorted(self.objects)]}

    def load(self, body: dict[str, Any] | None) -> None:
        body = body or {"index": 0, "kind_index": {}, "objects": []}
        self.index = body["index"]
        self.kind_index = dict(body["kind_index"])
        records = [ObjectRecord.from_dict(d) for d in body["objects"]]
        self.objects = {r.key: r for r in records}

"""Records held by the state machine."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass
class Instance:
    id: str
    service: str
    address: str
    port: int
    tags: tuple[str, ...]
    meta: dict[str, str]
    weight: int
    zone: str
    node: str
    status: str
    output: str = ""
    restarts: int = 0
    pid: int | None = None
    create_index: int = 0
    modify_index: int = 0

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id, "service": self.service, "address": self.address,
            "port": self.port, "tags": list(self.tags), "meta": dict(self.meta),
            "weight": self.weight, "zone": self.zone, "node": self.node,
            "status": self.status, "output": self.output, "restarts": self.restarts,
            "pid": self.pid, "create_index": self.create_index,
            "modify_index": self.modify_index,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Instance:
        return cls(**{**d, "tags": tuple(d["tags"]), "meta": dict(d["meta"])})


@dataclass
class KVEntry:
    key: str
    value: bytes
    create_index: int
    modify_index: int


@dataclass
class ConfigEntry:
    service: str
    settings: dict[str, Any] = field(default_factory=dict)
    modify_index: int = 0

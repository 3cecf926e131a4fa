"""Intentions in the replicated state: who may call whom (``intention_rules.py`` holds
the rules), keyed by source and destination, and the default policy, recorded once by
the founding leader. Pure."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

from meshlet.errors import ConfigError, Conflict, NotFound
from meshlet.intention_rules import ACTIONS, Intention, IntentionError, ranked

MAX_INTENTIONS = 10_000


@dataclass(frozen=True)
class IntentionSet:
    """Create or replace the intention from ``intention.source`` to its destination."""

    TYPE: ClassVar[str] = "intention_set"
    intention: dict[str, Any]


@dataclass(frozen=True)
class IntentionDelete:
    TYPE: ClassVar[str] = "intention_delete"
    source: str
    destination: str


@dataclass(frozen=True)
class IntentionDefaultSet:
    """Record the default policy; the same again changes nothing, another is refused."""

    TYPE: ClassVar[str] = "intention_default_set"
    policy: str


def parse(raw: object) -> Intention:
    """An intention from its API form; raises ConfigError naming the field."""
    if isinstance(raw, dict):
        raw = {k: v for k, v in raw.items() if k != "precedence"}  # as lists show it
    try:
        return Intention.from_dict(raw)
    except IntentionError as exc:
        raise ConfigError(str(exc), exc.field) from None


class IntentionTable:
    def __init__(self) -> None:
        self.intentions: dict[tuple[str, str], Intention] = {}
        self.default_policy = "allow"
        self.recorded = False  # the founding leader has recorded the default policy
        self.index = 0

    def __repr__(self) -> str:
        return (f"<IntentionTable {len(self.intentions)} default={self.default_policy} "
                f"index={self.index}>")

    def ranked(self) -> list[Intention]:
        return ranked(list(self.intentions.values()))

    def get(self, source: str, destination: str) -> Intention:
        found = self.intentions.get((source, destination))
        if found is None:
            raise NotFound(f"no intention from {source!r} to {destination!r}", "source")
        return found

    # -- checks ---------------------------------------------------------------------

    def check_set(self, cmd: IntentionSet) -> None:
        intention = parse(cmd.intention)
        if intention.key not in self.intentions and len(self.intentions) >= MAX_INTENTIONS:
            raise ConfigError(f"intentions: at most {MAX_INTENTIONS}", "source")

    def check_delete(self, cmd: IntentionDelete) -> None:
        self.get(cmd.source, cmd.destination)

    def check_default(self, cmd: IntentionDefaultSet) -> None:
        if cmd.policy not in ACTIONS:
            raise ConfigError("default_policy: expected allow or deny", "default_policy")
        if self.recorded and cmd.policy != self.default_policy:
            raise Conflict(f"the cluster's default intention policy is "
                           f"{self.default_policy}, recorded when it was founded",
                           "default_policy")

    # -- apply ----------------------------------------------------------------------

    def set(self, index: int, cmd: IntentionSet) -> dict[str, Any]:
        intention = parse(cmd.intention)
        self.intentions[intention.key] = intention
        self.index = index
        return intention.to_dict()

    def delete(self, index: int, cmd: IntentionDelete) -> None:
        del self.intentions[(cmd.source, cmd.destination)]
        self.index = index

    def set_default(self, index: int, cmd: IntentionDefaultSet) -> dict[str, Any]:
        if not self.recorded:
            self.default_policy, self.recorded, self.index = cmd.policy, True, index
        return {"default_policy": self.default_policy}

    def dump(self) -> dict[str, Any]:
        return {"default_policy": self.default_policy, "recorded": self.recorded,
                "index": self.index,
                "intentions": [i.to_dict() for i in self.ranked()]}

    def load(self, body: dict[str, Any] | None) -> None:
        body = body or {}
        self.default_policy = body.get("default_policy", "allow")
        self.recorded = bool(body.get("recorded", False))
        self.index = int(body.get("index", 0))
        self.intentions = {}
        for raw in body.get("intentions", []):
            intention = parse(raw)
            self.intentions[intention.key] = intention

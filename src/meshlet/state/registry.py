"""The one table of state-machine commands, as Consul's ``fsm`` registers its handlers.

Each command type is registered once, with what the write path needs of it together:
its codec (derived from the dataclass's field types when it is registered), its check
(raise the error ``apply`` would return, change nothing) and its apply. The state
machine dispatches from here and the server encodes and decodes log entries from
here, so a command cannot be decodable yet unappliable, or checked one way and
applied another. A type code that is not registered is refused on decode, and a
command class that is not registered is a bug (an AssertionError).

Log entries are compact JSON, ``{"type": CODE, field: value, ...}``; ``bytes`` fields
travel as base64 and tuples as lists. The codes are stable: entries written by earlier
versions decode unchanged.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import json
import typing
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from meshlet.errors import ConfigError

S = TypeVar("S")  # the state the commands change
C = TypeVar("C")  # one command type

Check = Callable[[S, Any], object]  # raises; what it returns is ignored
Apply = Callable[[S, int, Any], Any]


@dataclass(frozen=True)
class FieldCodec:
    """How one field of a command travels: as it is, as base64 (bytes) or as a list
    (tuples)."""

    name: str
    kind: str  # "plain", "bytes" or "tuple"

    def encode(self, value: Any) -> Any:
        if self.kind == "bytes" and isinstance(value, bytes):
            return base64.b64encode(value).decode("ascii")
        if self.kind == "tuple" and isinstance(value, tuple):
            return list(value)
        return value

    def decode(self, value: Any) -> Any:
        if self.kind == "bytes":
            if not isinstance(value, str):
                raise ConfigError(f"{self.name}: expected base64 text", self.name)
            try:
                return base64.b64decode(value, validate=True)
            except (binascii.Error, ValueError):
                raise ConfigError(f"{self.name}: not valid base64", self.name) from None
        if self.kind == "tuple" and isinstance(value, list):
            return tuple(value)
        return value


def field_codecs(cls: type[Any]) -> tuple[FieldCodec, ...]:
    hints = typing.get_type_hints(cls)
    codecs = []
    for f in dataclasses.fields(cls):
        hint = hints[f.name]
        origin = typing.get_origin(hint) or hint
        kind = "bytes" if hint is bytes else "tuple" if origin is tuple else "plain"
        codecs.append(FieldCodec(f.name, kind))
    return tuple(codecs)


@dataclass(frozen=True)
class CommandKind(Generic[S]):
    """One registered command type: its code, codec, check and apply."""

    cls: type[Any]
    code: str
    fields: tuple[FieldCodec, ...]
    check: Check[S]
    apply: Apply[S]

    def encode(self, command: Any) -> dict[str, Any]:
        body: dict[str, Any] = {"type": self.code}
        for f in self.fields:
            body[f.name] = f.encode(getattr(command, f.name))
        return body

    def decode(self, body: dict[str, Any]) -> Any:
        kwargs = {f.name: f.decode(body[f.name]) for f in self.fields if f.name in body}
        try:
            return self.cls(**kwargs)
        except TypeError as exc:
            raise ConfigError(f"malformed {self.code} command: {exc}", "type") from None


class CommandRegistry(Generic[S]):
    """Command types by class and by code; see the module docstring."""

    def __init__(self) -> None:
        self.by_class: dict[type[Any], CommandKind[S]] = {}
        self.by_code: dict[str, CommandKind[S]] = {}

    def __repr__(self) -> str:
        return f"<CommandRegistry {len(self.by_code)} commands>"

    def __iter__(self) -> Iterator[CommandKind[S]]:
        return iter(self.by_code.values())

    def register(self, cls: type[C], check: Callable[[S, C], object],
                 apply: Callable[[S, int, C], Any]) -> None:
        code = cls.TYPE  # type: ignore[attr-defined]
        assert dataclasses.is_dataclass(cls), f"{cls.__name__} is not a dataclass"
        assert code not in self.by_code, f"command code {code!r} registered twice"
        kind: CommandKind[S] = CommandKind(cls, code, field_codecs(cls), check, apply)
        self.by_class[cls] = kind
        self.by_code[code] = kind

    def kind(self, command: Any) -> CommandKind[S]:
        kind = self.by_class.get(type(command))
        assert kind is not None, f"unregistered command {command!r}"
        return kind

    def check(self, state: S, command: Any) -> None:
        """Raise the MeshletError applying ``command`` to ``state`` would give."""
        self.kind(command).check(state, command)

    def apply(self, state: S, index: int, command: Any) -> Any:
        """Apply a command whose check passed; returns what the caller is told."""
        return self.kind(command).apply(state, index, command)

    def to_dict(self, command: Any) -> dict[str, Any]:
        return self.kind(command).encode(command)

    def from_dict(self, body: Any) -> Any:
        """Rebuild a command from ``to_dict``'s output; raises ConfigError."""
        if not isinstance(body, dict):
            raise ConfigError("command: expected an object", "type")
        code = body.get("type")
        kind = self.by_code.get(code) if isinstance(code, str) else None
        if kind is None:
            raise ConfigError(f"unknown command type {code!r}", "type")
        return kind.decode(body)

    def encode(self, command: Any) -> bytes:
        """A log entry's bytes for ``command``."""
        return json.dumps(self.to_dict(command), separators=(",", ":")).encode()

    def decode(self, data: bytes) -> Any:
        """The command a log entry holds; raises ConfigError if it holds none."""
        try:
            body = json.loads(data)
        except (ValueError, UnicodeDecodeError) as exc:
            raise ConfigError(f"command: not valid JSON: {exc}", "type") from None
        return self.from_dict(body)

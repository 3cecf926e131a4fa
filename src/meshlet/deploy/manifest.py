"""The ``meshlet up`` file: services with command, replicas, port, upstreams, check, env.

Errors name the file, the line and the field path, e.g.
``shop.yaml:12: services.catalog.replicas: Input should be greater than or equal to 0``.
"""

from __future__ import annotations

import shlex
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from meshlet.durations import parse_duration
from meshlet.errors import ConfigError, MeshletError
from meshlet.quantities import parse_cpus, parse_memory
from meshlet.settings_rules import PROTOCOLS
from meshlet.state.machine import SERVICE_NAME


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class CheckSpec(Strict):
    """Exactly one of http (a path), tcp (true) or command; probes hit the app directly."""

    http: str | None = None
    tcp: bool = False
    command: list[str] | None = None
    interval: float = 1.0
    timeout: float = 1.0
    healthy_threshold: int = Field(default=1, ge=1, le=100)
    unhealthy_threshold: int = Field(default=2, ge=1, le=100)

    @field_validator("interval", "timeout", mode="before")
    @classmethod
    def _duration(cls, value: Any) -> float:
        seconds = parse_duration(value, "duration")
        if seconds <= 0:
            raise ValueError("must be greater than zero")
        return seconds

    @field_validator("command", mode="before")
    @classmethod
    def _argv(cls, value: Any) -> Any:
        return shlex.split(value) if isinstance(value, str) else value

    @model_validator(mode="after")
    def _one_kind(self) -> CheckSpec:
        kinds = [self.http is not None, self.tcp, self.command is not None]
        if sum(kinds) != 1:
            raise ValueError("set exactly one of http, tcp or command")
        if self.http is not None and not self.http.startswith("/"):
            raise ValueError("http: the path must start with '/'")
        return self

    @property
    def kind(self) -> str:
        return "http" if self.http is not None else "tcp" if self.tcp else "command"


class ServiceSpec(Strict):
    # With an image (from `meshlet image import`), the command is the image's
    # arguments (none: its Cmd) and each replica runs under runc.
    command: list[str] = []
    image: str | None = Field(default=None, pattern=r"^[A-Za-z0-9][A-Za-z0-9._/:@-]{0,254}$")
    memory: int | None = None
    cpus: float | None = None
    replicas: int = Field(default=1, ge=0, le=100)
    port: int | None = Field(default=None, ge=1, le=65535)
    upstreams: list[str] = []
    check: CheckSpec | None = None
    env: dict[str, str] = {}
    protocol: Literal[PROTOCOLS] = "http"  # type: ignore[valid-type]
    weight: int = Field(default=1, ge=0, le=10000)
    tags: list[str] = []
    meta: dict[str, str] = {}
    network: str | None = Field(default=None, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
    # Published on the agent's ingress gateway (plaintext on the host's loopback, mutual
    # TLS onward): a port, or true for one the kernel chooses.
    ingress: int | None = Field(default=None, ge=0, le=65535)

    @field_validator("ingress", mode="before")
    @classmethod
    def _ingress(cls, value: Any) -> Any:
        if value is True:
            return 0
        if value is False:
            return None
        return value

    @property
    def in_namespace(self) -> bool:
        """Replicas get namespaces of their own on ``network`` (not the host's)."""
        return self.network not in (None, "host")

    @field_validator("memory", "cpus", mode="before")
    @classmethod
    def _limit(cls, value: Any, info: ValidationInfo) -> Any:
        parse = parse_memory if info.field_name == "memory" else parse_cpus
        try:
            return None if value is None else parse(value)
        except MeshletError as exc:
            raise ValueError(str(exc).removeprefix(f"{info.field_name}: ")) from None

    @model_validator(mode="after")
    def _command_or_image(self) -> ServiceSpec:
        if not self.command and self.image is None:
            raise ValueError("give a command, or an image")
        if (self.memory or self.cpus) and self.image is None:
            raise ValueError("memory and cpus limit an image's containers: give an image")
        return self

    @field_validator("network")
    @classmethod
    def _network(cls, value: str | None) -> str | None:
        if value == "none":
            raise ValueError("a mesh service needs a network; 'none' has none")
        return value

    @field_validator("command", mode="before")
    @classmethod
    def _argv(cls, value: Any) -> Any:
        if isinstance(value, str):
            value = shlex.split(value)
            if not value:
                raise ValueError("must not be empty")
        return value

    @field_validator("env", mode="before")
    @classmethod
    def _env(cls, value: Any) -> Any:
        if isinstance(value, dict):
            return {str(k): str(v) for k, v in value.items()}
        return value


class Manifest(Strict):
    services: dict[str, ServiceSpec]

    @field_validator("services")
    @classmethod
    def _names(cls, value: dict[str, ServiceSpec]) -> dict[str, ServiceSpec]:
        for name, spec in value.items():
            if not SERVICE_NAME.match(name):
                raise ValueError(f"{name!r} is not a valid service name (lowercase letters, "
                                 "digits and '-')")
            for upstream in spec.upstreams:
                if not SERVICE_NAME.match(upstream):
                    raise ValueError(f"{name}: upstream {upstream!r} is not a service name")
        return value

    def start_order(self) -> list[str]:
        """Services ordered so each comes after the upstreams it declares in this file."""
        order: list[str] = []
        visiting: set[str] = set()

        def visit(name: str) -> None:
            if name in order or name not in self.services:
                return
            if name in visiting:
                return  # a cycle: start order among its members does not matter
            visiting.add(name)
            for upstream in self.services[name].upstreams:
                visit(upstream)
            order.append(name)

        for name in sorted(self.services):
            visit(name)
        return order


def _line_index(node: yaml.Node, path: tuple[Any, ...], out: dict[tuple[Any, ...], int]
                ) -> None:
    out.setdefault(path, node.start_mark.line + 1)
    if isinstance(node, yaml.MappingNode):
        for key, value in node.value:
            out[(*path, key.value)] = key.start_mark.line + 1
            _line_index(value, (*path, key.value), out)
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            _line_index(item, (*path, i), out)


def parse_manifest(text: str, source: str = "<manifest>") -> Manifest:
    """Parse and validate; raise ConfigError with ``source:line: field.path: message``."""
    try:
        data = yaml.safe_load(text)
        root = yaml.compose(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{source}:{mark.line + 1}" if mark else source
        raise ConfigError(f"{where}: not valid YAML: {getattr(exc, 'problem', exc)}") from None
    lines: dict[tuple[Any, ...], int] = {}
    if root is not None:
        _line_index(root, (), lines)
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: expected a mapping with a 'services' key", "services")
    try:
        return Manifest.model_validate(data)
    except ValidationError as exc:
        err = exc.errors()[0]
        loc = tuple(err["loc"])
        line = next((lines[loc[:n]] for n in range(len(loc), -1, -1) if loc[:n] in lines), 1)
        field = ".".join(str(p) for p in loc)
        message = err["msg"].removeprefix("Value error, ")
        raise ConfigError(f"{source}:{line}: {field or 'file'}: {message}", field) from None


def load_manifest(path: Path) -> Manifest:
    try:
        text = path.read_text()
    except OSError as exc:
        raise ConfigError(f"cannot read {path}: {exc.strerror}", "file") from None
    return parse_manifest(text, str(path))

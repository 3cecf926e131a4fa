"""Request bodies, validated with pydantic; errors become ConfigError with a field path."""

from __future__ import annotations

from typing import Any, Literal, TypeVar

from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from meshlet import json_limits
from meshlet.errors import ConfigError


class Body(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)


class RegisterBody(Body):
    service: str
    id: str | None = None
    address: str = "127.0.0.1"
    port: int = Field(ge=1, le=65535)
    tags: list[str] = []
    meta: dict[str, str] = {}
    weight: int = Field(default=1, ge=0, le=10000)
    zone: str = ""
    node: str = ""
    status: Literal["passing", "warning", "critical"] = "critical"


class HealthBody(Body):
    status: Literal["passing", "warning", "critical"]
    output: str = ""
    restarts: int | None = Field(default=None, ge=0)
    pid: int | None = None


class PeerBody(Body):
    id: str = Field(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
    raft: str = Field(min_length=1)
    http: str = Field(min_length=1)


class NetworkBody(Body):
    name: str
    driver: str = "bridge"
    subnet: str | None = None
    gateway: str | None = None
    internal: bool = False


class ContainerBody(Body):
    name: str
    node: str
    command: list[str] = []
    env: dict[str, str] = {}
    networks: list[str] = []
    ports: list[str] = []
    image: str = ""
    image_id: str = ""
    entrypoint: list[str] = []
    user: str = ""
    workdir: str = ""
    restart: str = "no"
    memory: int = 0
    cpus: float = 0.0
    stop_timeout: int = 10


class DesiredBody(Body):
    desired: Literal["running", "stopped"]
    stop_timeout: int = -1


class ContainerStatusBody(Body):
    status: str
    pid: int | None = None
    exit_code: int | None = None
    namespace: str = ""
    log: str = ""
    detail: str = ""
    restart_count: int = 0


class NodeBody(Body):
    address: str
    zone: str = Field(default="", max_length=64)
    cpus: float = Field(default=0.0, ge=0, le=4096)       # what the node offers its pods
    memory: int = Field(default=0, ge=0, le=1 << 50)      # bytes; 0: not said
    metrics: str = Field(default="", max_length=64)        # the agent's HOST:PORT


class CidrBody(Body):
    cidr: str


class AddressBody(Body):
    address: str | None = None


M = TypeVar("M", bound=Body)


async def read_json(request: web.Request) -> Any:
    """The body as JSON (empty is ``null``): at most 1 MiB, 32 levels deep, every
    number finite; raise ConfigError (400) otherwise."""
    if (request.content_length or 0) > json_limits.MAX_BYTES:
        raise ConfigError(f"request body is {request.content_length} bytes; at most "
                          f"{json_limits.MAX_BYTES} are allowed", "body")
    return json_limits.loads(await request.read())


def parse_body(model: type[M], data: Any) -> M:
    """Validate ``data`` into ``model``; raise ConfigError naming the first bad field."""
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        err = exc.errors()[0]
        field = ".".join(str(p) for p in err["loc"]) or None
        raise ConfigError(f"{field or 'body'}: {err['msg']}", field) from None

"""Typed state-machine commands: frozen records with a stable type code (``TYPE``).

A command is what a write proposes and what a Raft log entry holds. Each one is
registered once, with its codec, check and apply, in ``machine.COMMANDS``
(``registry.py`` says how); the classes here are only the records.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

from meshlet.state.ca import CaRootPrune, CaRootRotate, CaRootSet
from meshlet.state.intentions import IntentionDefaultSet, IntentionDelete, IntentionSet

HEALTH_STATES = ("passing", "warning", "critical")


@dataclass(frozen=True)
class RegisterInstance:
    TYPE: ClassVar[str] = "register"
    id: str
    service: str
    address: str
    port: int
    tags: tuple[str, ...] = ()
    meta: dict[str, str] = field(default_factory=dict)
    weight: int = 1
    zone: str = ""
    node: str = ""
    status: str = "critical"


@dataclass(frozen=True)
class DeregisterInstance:
    TYPE: ClassVar[str] = "deregister"
    id: str


@dataclass(frozen=True)
class SetHealth:
    TYPE: ClassVar[str] = "health"
    id: str
    status: str
    output: str = ""
    restarts: int | None = None
    pid: int | None = None


@dataclass(frozen=True)
class KVPut:
    TYPE: ClassVar[str] = "kv_put"
    key: str
    value: bytes
    cas: int | None = None  # 0: only if absent; N: only if modify_index == N


@dataclass(frozen=True)
class KVDelete:
    TYPE: ClassVar[str] = "kv_delete"
    key: str
    cas: int | None = None


@dataclass(frozen=True)
class ConfigSet:
    """Merge ``settings`` into the entry (a None value removes a key), or replace it."""

    TYPE: ClassVar[str] = "config_set"
    service: str
    settings: dict[str, Any]
    replace: bool = False


@dataclass(frozen=True)
class ConfigDelete:
    TYPE: ClassVar[str] = "config_delete"
    service: str


@dataclass(frozen=True)
class NetworkCreate:
    """A network; without ``subnet``, the first default pool free of overlaps."""

    TYPE: ClassVar[str] = "network_create"
    name: str
    driver: str = "bridge"
    subnet: str | None = None
    gateway: str | None = None
    internal: bool = False


@dataclass(frozen=True)
class NetworkDelete:
    TYPE: ClassVar[str] = "network_delete"
    name: str


@dataclass(frozen=True)
class AddressAssign:
    """An address on ``network`` for ``owner`` (a workload attachment): ``address`` if
    given, else the lowest free one. Asking again for the same owner returns its
    address, so a retried request never takes a second one."""

    TYPE: ClassVar[str] = "address_assign"
    network: str
    owner: str
    address: str | None = None


@dataclass(frozen=True)
class AddressRelease:
    TYPE: ClassVar[str] = "address_release"
    network: str
    owner: str


@dataclass(frozen=True)
class ContainerCreate:
    """A workload run by the agent on ``node`` in its own network namespace, joined to
    ``networks`` (addresses are assigned as this applies), or on the host's network.
    With an ``image`` it runs under runc in a root filesystem of its own, ``command``
    being the arguments given after the image (none: the image's Cmd)."""

    TYPE: ClassVar[str] = "container_create"
    name: str
    node: str
    command: tuple[str, ...]
    env: dict[str, str] = field(default_factory=dict)
    networks: tuple[str, ...] = ()
    ports: tuple[str, ...] = ()       # "HOSTPORT:PORT" or "IP:HOSTPORT:PORT"
    image: str = ""                   # NAME[:TAG] as given
    image_id: str = ""                # sha256:..., resolved where the image is known
    entrypoint: tuple[str, ...] = ()  # () keeps the image's
    user: str = ""
    workdir: str = ""
    restart: str = "no"
    memory: int = 0                   # bytes; 0 is no limit
    cpus: float = 0.0                 # 0 is no limit
    stop_timeout: int = 10            # seconds between SIGTERM and SIGKILL


@dataclass(frozen=True)
class ContainerDesire:
    """Ask for a container to be ``running`` or ``stopped``."""

    TYPE: ClassVar[str] = "container_desire"
    name: str
    desired: str
    stop_timeout: int = -1            # >= 0: the grace period from now on (`stop -t`)


@dataclass(frozen=True)
class ContainerReport:
    """What the agent observed: the process's state, pid, exit code, namespace, log."""

    TYPE: ClassVar[str] = "container_report"
    name: str
    status: str
    pid: int | None = None
    exit_code: int | None = None
    namespace: str = ""
    log: str = ""
    detail: str = ""
    restart_count: int = 0


@dataclass(frozen=True)
class ContainerDelete:
    """Forget a container and release its addresses; its agent cleans up the host."""

    TYPE: ClassVar[str] = "container_delete"
    name: str


@dataclass(frozen=True)
class ContainerConnect:
    """Join (``connect``) or leave a network while the container exists."""

    TYPE: ClassVar[str] = "container_connect"
    name: str
    network: str
    connect: bool = True


@dataclass(frozen=True)
class NodeRegister:
    """A host running an agent, and the address other hosts reach it on (the VXLAN
    tunnel end of its overlay networks). Registering again updates the address."""

    TYPE: ClassVar[str] = "node_register"
    name: str
    address: str
    zone: str = ""       # for spreading a Deployment's replicas
    cpus: float = 0.0    # the capacity replicas are placed against (0: unknown)
    memory: int = 0
    metrics: str = ""    # HOST:PORT of the agent's read-only /metrics ("": none)


@dataclass(frozen=True)
class NodeDeregister:
    """A host that left: other hosts remove its overlay entries."""

    TYPE: ClassVar[str] = "node_deregister"
    name: str


@dataclass(frozen=True)
class ServiceCidrSet:
    """Where services' virtual IPs come from; every service is renumbered."""

    TYPE: ClassVar[str] = "service_cidr_set"
    cidr: str


@dataclass(frozen=True)
class AclBootstrap:
    """The cluster's first management token; refused once there has been one. The
    state keeps the secret's SHA-256 only: the proposing server alone knows it."""

    TYPE: ClassVar[str] = "acl_bootstrap"
    accessor: str
    secret_hash: str


@dataclass(frozen=True)
class AclTokenCreate:
    TYPE: ClassVar[str] = "acl_token_create"
    accessor: str
    secret_hash: str
    description: str = ""
    policies: tuple[str, ...] = ()
    management: bool = False
    node_identities: tuple[str, ...] = ()


@dataclass(frozen=True)
class AclTokenDelete:
    TYPE: ClassVar[str] = "acl_token_delete"
    accessor: str


@dataclass(frozen=True)
class AclPolicySet:
    """Create a policy, or replace its rules."""

    TYPE: ClassVar[str] = "acl_policy_set"
    name: str
    rules: tuple[dict[str, str], ...] = ()
    description: str = ""


@dataclass(frozen=True)
class AclPolicyDelete:
    TYPE: ClassVar[str] = "acl_policy_delete"
    name: str


@dataclass(frozen=True)
class ObjectApply:
    """Create or update a Kubernetes object (``meshlet apply``): ``manifest`` is its
    canonical dict (``KubeObject.canonical()``), validated again as this applies."""

    TYPE: ClassVar[str] = "object_apply"
    manifest: dict[str, Any]
    created: float = 0.0              # when the API took it (the state reads no clock)


@dataclass(frozen=True)
class ObjectDelete:
    """Forget an object; a Namespace takes everything in it along."""

    TYPE: ClassVar[str] = "object_delete"
    kind: str
    namespace: str
    name: str


@dataclass(frozen=True)
class ObjectScale:
    """Set a Deployment's ``spec.replicas`` (``meshlet scale``, the autoscaler)."""

    TYPE: ClassVar[str] = "object_scale"
    kind: str
    namespace: str
    name: str
    replicas: int


@dataclass(frozen=True)
class ObjectStatus:
    """What the controller observed of an object: ``status`` replaces the old one,
    ``events`` are appended (a repeat of the last one counts up)."""

    TYPE: ClassVar[str] = "object_status"
    kind: str
    namespace: str
    name: str
    status: dict[str, Any]
    events: tuple[dict[str, Any], ...] = ()


@dataclass(frozen=True)
class PodCreate:
    """A replica of a Deployment, placed on ``node`` by the controller; ``container``
    is ``kube_objects.container_spec`` of the template it runs."""

    TYPE: ClassVar[str] = "pod_create"
    name: str
    namespace: str
    deployment: str
    revision: int
    template_hash: str
    node: str
    container: dict[str, Any]
    service: str = ""                 # the catalog service it registers as ("": none)
    created: float = 0.0              # seconds since the epoch; 0: not known


@dataclass(frozen=True)
class PodDelete:
    """Forget a pod. ``node`` set: the agent of that node asks, and only for a pod of
    its own that is terminating (it has stopped it)."""

    TYPE: ClassVar[str] = "pod_delete"
    name: str
    node: str = ""


@dataclass(frozen=True)
class PodTerminate:
    """Ask the pod's agent to stop it (phase ``terminating``); it then deletes it."""

    TYPE: ClassVar[str] = "pod_terminate"
    name: str


@dataclass(frozen=True)
class PodReport:
    """What the pod's agent observed. ``node``: the node reporting; the pod must be
    placed there ("" for an operator, who may report any)."""

    TYPE: ClassVar[str] = "pod_report"
    name: str
    phase: str
    ready: bool = False
    restarts: int = 0
    detail: str = ""
    address: str = ""
    node: str = ""
    pid: int | None = None            # the app's process on its node, while it runs
    # What its sidecar and cgroup measured over the last interval, for the autoscaler:
    # cpu (% of its CPU limit), requests_per_second, p95_latency_seconds (None: none).
    metrics: dict[str, float | None] = field(default_factory=dict)


Command = (RegisterInstance | DeregisterInstance | SetHealth | KVPut | KVDelete
           | ConfigSet | ConfigDelete | NetworkCreate | NetworkDelete | AddressAssign
           | AddressRelease | ContainerCreate | ContainerDesire | ContainerReport
           | ContainerDelete | ContainerConnect | NodeRegister | NodeDeregister
           | ServiceCidrSet | AclBootstrap | AclTokenCreate | AclTokenDelete | AclPolicySet
           | AclPolicyDelete | CaRootSet | CaRootRotate | CaRootPrune | IntentionSet
           | IntentionDelete | IntentionDefaultSet | ObjectApply | ObjectDelete | ObjectScale
           | ObjectStatus | PodCreate | PodDelete | PodTerminate | PodReport)

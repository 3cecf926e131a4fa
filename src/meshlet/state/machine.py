"""The state machine: ``apply(index, command) -> Result``, snapshots and queries.

Indexes: ``index`` is the last applied log position. Each table (catalog, kv, config)
and each service keeps the index of its last real change, so blocking queries wake
only when what they watch changed, as Consul's do. A command that fails validation
changes no table, only ``index``.
"""

from __future__ import annotations

import base64
import json
import re
from dataclasses import dataclass
from typing import Any

from meshlet.errors import ConfigError, Conflict, MeshletError, NotFound
from meshlet.state.acl import AclTable
from meshlet.state.ca import CaRootPrune, CaRootRotate, CaRootSet, CaTable
from meshlet.state.commands import (
    HEALTH_STATES,
    AclBootstrap,
    AclPolicyDelete,
    AclPolicySet,
    AclTokenCreate,
    AclTokenDelete,
    AddressAssign,
    AddressRelease,
    Command,
    ConfigDelete,
    ConfigSet,
    ContainerConnect,
    ContainerCreate,
    ContainerDelete,
    ContainerDesire,
    ContainerReport,
    DeregisterInstance,
    KVDelete,
    KVPut,
    NetworkCreate,
    NetworkDelete,
    NodeDeregister,
    NodeRegister,
    ObjectApply,
    ObjectDelete,
    ObjectScale,
    ObjectStatus,
    PodCreate,
    PodDelete,
    PodReport,
    PodTerminate,
    RegisterInstance,
    ServiceCidrSet,
    SetHealth,
)
from meshlet.state.config_entry import validate_settings
from meshlet.state.containers import ContainerTable
from meshlet.state.intentions import (
    IntentionDefaultSet,
    IntentionDelete,
    IntentionSet,
    IntentionTable,
)
from meshlet.state.model import ConfigEntry, Instance, KVEntry
from meshlet.state.networks import NetworkTable
from meshlet.state.nodes import NodeTable
from meshlet.state.objects import ObjectTable
from meshlet.state.pods import PodTable
from meshlet.state.registry import Apply, Check, CommandRegistry
from meshlet.state.vips import VipTable

SERVICE_NAME = re.compile(r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?\Z")  # \Z, not $: "web\n" matched
MAX_KEY_LENGTH = 512
MAX_VALUE_BYTES = 512 * 1024


@dataclass(frozen=True)
class Result:
    """What one apply did: ``value`` on success, ``error`` (not raised) on failure."""

    index: int
    value: Any = None
    error: MeshletError | None = None

    @property
    def ok(self) -> bool:
        return self.error is None


class StateMachine:
    def __init__(self) -> None:
        self.index = 0
        self.catalog_index = 0
        self.kv_index = 0
        self.config_index = 0
        self.service_index: dict[str, int] = {}
        self.instances: dict[str, Instance] = {}
        self.kv: dict[str, KVEntry] = {}
        self.config: dict[str, ConfigEntry] = {}
        self.vips = VipTable()
        self.networks = NetworkTable(self.vips)
        self.containers = ContainerTable(self.networks)
        self.nodes = NodeTable()
        self.acl = AclTable()
        self.ca = CaTable()
        self.intentions = IntentionTable()
        self.objects = ObjectTable()
        self.pods = PodTable(self.objects)

    def __repr__(self) -> str:
        return (f"<StateMachine index={self.index} instances={len(self.instances)} "
                f"kv={len(self.kv)} config={len(self.config)}>")

    # -- write path -------------------------------------------------------------------

    def check(self, command: Command) -> MeshletError | None:
        """The error ``apply`` would return for ``command`` now, or None."""
        try:
            COMMANDS.check(self, command)
        except MeshletError as exc:
            return exc
        return None

    def apply(self, index: int, command: Command) -> Result:
        """Apply one committed command at log position ``index`` (strictly increasing)."""
        assert index > self.index, f"apply index {index} <= applied {self.index}"
        COMMANDS.kind(command)  # an unregistered command is a bug: change nothing
        self.index = index
        error = self.check(command)
        if error is not None:
            return Result(index, error=error)
        return Result(index, value=COMMANDS.apply(self, index, command))

    def _touch_service(self, service: str, index: int) -> None:
        self.catalog_index = index
        self.service_index[service] = index

    def _register(self, index: int, cmd: RegisterInstance) -> dict[str, Any]:
        existing = self.instances.get(cmd.id)
        inst = Instance(
            id=cmd.id, service=cmd.service, address=cmd.address, port=cmd.port,
            tags=tuple(cmd.tags), meta=dict(cmd.meta), weight=cmd.weight, zone=cmd.zone,
            node=cmd.node, status=cmd.status,
            create_index=existing.create_index if existing else index, modify_index=index)
        self.instances[cmd.id] = inst
        if existing and existing.service != cmd.service:
            self._touch_service(existing.service, index)
            self._release_vip_if_unused(index, existing.service)
        self._touch_service(cmd.service, index)
        self.vips.ensure(index, cmd.service)
        return inst.to_dict()

    def _deregister(self, index: int, cmd: DeregisterInstance) -> None:
        inst = self.instances.pop(cmd.id)
        self._touch_service(inst.service, index)
        self._release_vip_if_unused(index, inst.service)

    def _release_vip_if_unused(self, index: int, service: str) -> None:
        if not any(i.service == service for i in self.instances.values()):
            self.vips.release(index, service)

    def _set_health(self, index: int, cmd: SetHealth) -> dict[str, Any]:
        inst = self.instances[cmd.id]
        inst.status = cmd.status
        inst.output = cmd.output
        if cmd.restarts is not None:
            inst.restarts = cmd.restarts
        if cmd.pid is not None:
            inst.pid = cmd.pid
        inst.modify_index = index
        self._touch_service(inst.service, index)
        return inst.to_dict()

    def _kv_put(self, index: int, cmd: KVPut) -> dict[str, Any]:
        existing = self.kv.get(cmd.key)
        entry = KVEntry(cmd.key, cmd.value, existing.create_index if existing else index,
                        index)
        self.kv[cmd.key] = entry
        self.kv_index = index
        return kv_to_dict(entry)

    def _kv_delete(self, index: int, cmd: KVDelete) -> bool:
        removed = self.kv.pop(cmd.key, None) is not None
        if removed:
            self.kv_index = index
        return removed

    def _config_set(self, index: int, cmd: ConfigSet) -> dict[str, Any]:
        entry = ConfigEntry(cmd.service, merged_settings(self, cmd), index)
        self.config[cmd.service] = entry
        self.config_index = index
        return config_to_dict(entry)

    def _config_delete(self, index: int, cmd: ConfigDelete) -> None:
        del self.config[cmd.service]
        self.config_index = index

    # -- queries ----------------------------------------------------------------------

    def services(self) -> dict[str, dict[str, Any]]:
        summary: dict[str, dict[str, Any]] = {}
        for inst in self.instances.values():
            s = summary.setdefault(inst.service, {"name": inst.service, "instances": 0,
                                                  "passing": 0, "tags": set()})
            s["instances"] += 1
            s["passing"] += inst.status == "passing"
            s["tags"].update(inst.tags)
        for s in summary.values():
            s["tags"] = sorted(s["tags"])
        return dict(sorted(summary.items()))

    def service_instances(self, service: str, passing_only: bool = False) -> list[Instance]:
        found = [i for i in self.instances.values() if i.service == service
                 and (not passing_only or i.status == "passing")]
        return sorted(found, key=lambda i: i.id)

    def kv_list(self, prefix: str) -> list[KVEntry]:
        return [self.kv[k] for k in sorted(self.kv) if k.startswith(prefix)]

    # -- snapshots --------------------------------------------------------------------

    def snapshot(self) -> bytes:
        """A deterministic serialisation: equal states give equal bytes."""
        body = {
            "index": self.index, "catalog_index": self.catalog_index,
            "kv_index": self.kv_index, "config_index": self.config_index,
            "service_index": self.service_index,
            "instances": [self.instances[k].to_dict() for k in sorted(self.instances)],
            "kv": [kv_to_dict(self.kv[k]) for k in sorted(self.kv)],
            "config": [config_to_dict(self.config[k]) for k in sorted(self.config)],
            "networks": self.networks.dump(),
            "containers": self.containers.dump(),
            "nodes": self.nodes.dump(),
            "vips": self.vips.dump(),
            "acl": self.acl.dump(),
            "ca": self.ca.dump(),
            "intentions": self.intentions.dump(),
            "objects": self.objects.dump(),
            "pods": self.pods.dump(),
        }
        return json.dumps(body, sort_keys=True, separators=(",", ":")).encode()

    def restore(self, data: bytes) -> None:
        body = json.loads(data)
        self.index = body["index"]
        self.catalog_index = body["catalog_index"]
        self.kv_index = body["kv_index"]
        self.config_index = body["config_index"]
        self.service_index = dict(body["service_index"])
        self.instances = {d["id"]: Instance.from_dict(d) for d in body["instances"]}
        self.kv = {d["key"]: KVEntry(d["key"], base64.b64decode(d["value"]),
                                     d["create_index"], d["modify_index"])
                   for d in body["kv"]}
        self.config = {d["service"]: ConfigEntry(d["service"], d["settings"],
                                                 d["modify_index"])
                       for d in body["config"]}
        self.networks.load(body.get("networks"))
        self.containers.load(body.get("containers"))
        self.nodes.load(body.get("nodes"))
        self.vips.load(body.get("vips"))
        self.acl.load(body.get("acl"))
        self.ca.load(body.get("ca"))
        self.intentions.load(body.get("intentions"))
        self.objects.load(body.get("objects"))
        self.pods.load(body.get("pods"))


def kv_to_dict(entry: KVEntry) -> dict[str, Any]:
    return {"key": entry.key, "value": base64.b64encode(entry.value).decode("ascii"),
            "create_index": entry.create_index, "modify_index": entry.modify_index}


def config_to_dict(entry: ConfigEntry) -> dict[str, Any]:
    return {"service": entry.service, "settings": dict(entry.settings),
            "modify_index": entry.modify_index}


# -- validation: one function per command, raising the error apply would return ------

def _check_service_name(name: object, field: str = "service") -> None:
    if not isinstance(name, str) or not SERVICE_NAME.match(name):
        raise ConfigError(
            f"{field}: {name!r} is not a valid service name (lowercase letters, digits "
            "and '-', at most 63 characters)", field)


def _check_register(sm: StateMachine, cmd: RegisterInstance) -> None:
    if not isinstance(cmd.id, str) or not cmd.id or len(cmd.id) > 128:
        raise ConfigError("id: must be a non-empty string of at most 128 characters", "id")
    _check_service_name(cmd.service)
    if not isinstance(cmd.address, str) or not cmd.address:
        raise ConfigError("address: must be a non-empty string", "address")
    if isinstance(cmd.port, bool) or not isinstance(cmd.port, int) or not 0 < cmd.port < 65536:
        raise ConfigError(f"port: {cmd.port!r} is not a port number (1..65535)", "port")
    weight = cmd.weight
    if isinstance(weight, bool) or not isinstance(weight, int) or not 0 <= weight <= 10000:
        raise ConfigError(f"weight: {cmd.weight!r} is outside 0..10000", "weight")
    if not all(isinstance(t, str) for t in cmd.tags):
        raise ConfigError("tags: must be strings", "tags")
    if not isinstance(cmd.meta, dict) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in cmd.meta.items()):
        raise ConfigError("meta: must map strings to strings", "meta")
    if cmd.status not in HEALTH_STATES:
        raise ConfigError(f"status: {cmd.status!r} is not one of {', '.join(HEALTH_STATES)}",
                          "status")


def _check_deregister(sm: StateMachine, cmd: DeregisterInstance) -> None:
    if cmd.id not in sm.instances:
        raise NotFound(f"instance {cmd.id!r} is not registered", "id")


def _check_health(sm: StateMachine, cmd: SetHealth) -> None:
    if cmd.status not in HEALTH_STATES:
        raise ConfigError(f"status: {cmd.status!r} is not one of {', '.join(HEALTH_STATES)}",
                          "status")
    if cmd.id not in sm.instances:
        raise NotFound(f"instance {cmd.id!r} is not registered", "id")


def _check_key(key: object) -> None:
    if not isinstance(key, str) or not key or len(key) > MAX_KEY_LENGTH or key.startswith("/"):
        raise ConfigError(
            f"key: must be 1..{MAX_KEY_LENGTH} characters and not start with '/'", "key")


def _check_cas(sm: StateMachine, key: str, cas: int | None) -> None:
    if cas is None:
        return
    if isinstance(cas, bool) or not isinstance(cas, int) or cas < 0:
        raise ConfigError("cas: must be a non-negative integer", "cas")
    current = sm.kv.get(key)
    current_index = current.modify_index if current else 0
    if current_index != cas:
        raise Conflict(f"key {key!r}: check-and-set failed, modify index is "
                       f"{current_index}, not {cas}", "cas")


def _check_kv_put(sm: StateMachine, cmd: KVPut) -> None:
    _check_key(cmd.key)
    if not isinstance(cmd.value, bytes) or len(cmd.value) > MAX_VALUE_BYTES:
        raise ConfigError(f"value: must be at most {MAX_VALUE_BYTES} bytes", "value")
    _check_cas(sm, cmd.key, cmd.cas)


def _check_kv_delete(sm: StateMachine, cmd: KVDelete) -> None:
    _check_key(cmd.key)
    _check_cas(sm, cmd.key, cmd.cas)


def merged_settings(sm: StateMachine, cmd: ConfigSet) -> dict[str, Any]:
    """The entry ``cmd`` would leave behind, validated; raises ConfigError."""
    if not isinstance(cmd.settings, dict):
        raise ConfigError("settings: expected an object", "settings")
    current = sm.config.get(cmd.service)
    base = {} if cmd.replace or current is None else dict(current.settings)
    for key, value in cmd.settings.items():
        if value is None:
            base.pop(key, None)
        else:
            base[key] = value
    return validate_settings(base)


def _check_config_set(sm: StateMachine, cmd: ConfigSet) -> None:
    _check_service_name(cmd.service)
    merged_settings(sm, cmd)


def _check_config_delete(sm: StateMachine, cmd: ConfigDelete) -> None:
    if cmd.service not in sm.config:
        raise NotFound(f"no config entry for service {cmd.service!r}", "service")


# -- the registry: each command once, with its check and its apply ---------------------

TABLES: dict[str, type[Any]] = {"networks": NetworkTable, "containers": ContainerTable,
                                "nodes": NodeTable, "acl": AclTable, "ca": CaTable,
                                "intentions": IntentionTable, "objects": ObjectTable,
                                "pods": PodTable}


def on_table(table: str, check: str, apply: str) -> tuple[Check[StateMachine],
                                                           Apply[StateMachine]]:
    """The check and apply of a command that one of the machine's tables handles
    (``sm.networks.check_create`` and ``sm.networks.create``, say); a name that does
    not exist fails here, at import."""
    kind = TABLES[table]
    assert callable(getattr(kind, check)) and callable(getattr(kind, apply))

    def check_on(sm: StateMachine, cmd: Any) -> object:
        return getattr(getattr(sm, table), check)(cmd)

    def apply_on(sm: StateMachine, index: int, cmd: Any) -> Any:
        return getattr(getattr(sm, table), apply)(index, cmd)
    return check_on, apply_on


COMMANDS: CommandRegistry[StateMachine] = CommandRegistry()
COMMANDS.register(RegisterInstance, _check_register, StateMachine._register)
COMMANDS.register(DeregisterInstance, _check_deregister, StateMachine._deregister)
COMMANDS.register(SetHealth, _check_health, StateMachine._set_health)
COMMANDS.register(KVPut, _check_kv_put, StateMachine._kv_put)
COMMANDS.register(KVDelete, _check_kv_delete, StateMachine._kv_delete)
COMMANDS.register(ConfigSet, _check_config_set, StateMachine._config_set)
COMMANDS.register(ConfigDelete, _check_config_delete, StateMachine._config_delete)
for cls, table, check, apply in [
        (NetworkCreate, "networks", "check_create", "create"),
        (NetworkDelete, "networks", "check_delete", "delete"),
        (AddressAssign, "networks", "check_assign", "assign"),
        (AddressRelease, "networks", "check_release", "release"),
        (ContainerCreate, "containers", "check_create", "create"),
        (ContainerDesire, "containers", "check_desire", "desire"),
        (ContainerReport, "containers", "check_report", "report"),
        (ContainerDelete, "containers", "check_delete", "delete"),
        (ContainerConnect, "containers", "check_connect", "connect"),
        (NodeRegister, "nodes", "check_register", "register"),
        (NodeDeregister, "nodes", "check_deregister", "deregister"),
        (AclBootstrap, "acl", "check_bootstrap", "bootstrap"),
        (AclTokenCreate, "acl", "check_token_create", "token_create"),
        (AclTokenDelete, "acl", "check_token_delete", "token_delete"),
        (AclPolicySet, "acl", "check_policy_set", "policy_set"),
        (AclPolicyDelete, "acl", "check_policy_delete", "policy_delete"),
        (CaRootSet, "ca", "check_set", "set"),
        (CaRootRotate, "ca", "check_rotate", "rotate"),
        (CaRootPrune, "ca", "check_prune", "prune"),
        (IntentionSet, "intentions", "check_set", "set"),
        (IntentionDelete, "intentions", "check_delete", "delete"),
        (IntentionDefaultSet, "intentions", "check_default", "set_default"),
        (ObjectApply, "objects", "check_apply", "apply"),
        (ObjectDelete, "objects", "check_delete", "delete"),
        (ObjectScale, "objects", "check_scale", "scale"),
        (ObjectStatus, "objects", "check_status", "set_status"),
        (PodCreate, "pods", "check_create", "create"),
        (PodDelete, "pods", "check_delete", "delete"),
        (PodTerminate, "pods", "check_terminate", "terminate"),
        (PodReport, "pods", "check_report", "report")]:
    COMMANDS.register(cls, *on_table(table, check, apply))
COMMANDS.register(ServiceCidrSet,
                  lambda sm, c: sm.vips.check_cidr(c, sm.networks.subnets()),
                  lambda sm, i, c: sm.vips.set_cidr(i, c))

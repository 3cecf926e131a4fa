"""The sidecar's configuration snapshot: what the agent pushes, what ``/config`` shows."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from typing import Any

from meshlet.errors import ConfigError
from meshlet.http_limits import HEAD_TIMEOUT
from meshlet.intention_rules import ACTIONS, Intention, IntentionError
from meshlet.proxy.settings import effective
from meshlet.settings_rules import PROTOCOLS

MAX_HEAD_TIMEOUT = 3600.0  # and for idle_timeout
# Seconds a kept-alive client connection may sit idle between requests, as nginx's
# keepalive_timeout (75 s): longer than a pool's default idle_timeout (60 s), so a peer
# sidecar's pool lets its connections go before this side closes them.
IDLE_TIMEOUT = 75.0
# Client connections one HTTP listener holds at once; one more is closed on arrival.
# Below the descriptor limit the agent gives a sidecar, so the admin socket and the
# upstream connections still get theirs when clients open too many.
MAX_CONNECTIONS = 4096
MAX_MAX_CONNECTIONS = 1_000_000
# Seconds an HTTP listener waits for a client's first byte before it takes the
# connection for a server-speaks-first protocol and relays it as bytes (proxy/opaque.py).
DETECT_TIMEOUT = 5.0


def cluster_key(direction: str, name: str) -> str:
    """Clusters are keyed by listener: ``inbound:<own service>``, ``outbound:<upstream>``."""
    return f"{direction}:{name}"


@dataclass(frozen=True)
class Endpoint:
    id: str
    address: str
    port: int
    weight: int = 1
    zone: str = ""
    node: str = ""
    healthy: bool = True
    meta: tuple[tuple[str, str], ...] = ()

    def has_labels(self, labels: tuple[tuple[str, str], ...]) -> bool:
        return all(item in self.meta for item in labels)

    @property
    def key(self) -> tuple[str, int]:
        return (self.address, self.port)


def endpoint_to_dict(e: Endpoint) -> dict[str, Any]:
    return {**vars(e), "meta": dict(e.meta)}


def endpoint_from_dict(d: Any) -> Endpoint:
    """Raise ConfigError (field ``endpoints``) unless ``d`` is a well-formed endpoint."""
    if not isinstance(d, dict) or not set(d) <= ENDPOINT_KEYS:
        raise ConfigError(f"endpoint: expected an object with keys from "
                          f"{sorted(ENDPOINT_KEYS)}, got {_shown(d)}", "endpoints")
    meta = d.get("meta", {})
    if not isinstance(meta, dict) or len(meta) > MAX_ITEMS or not all(
            _is_text(k) and _is_text(v) for k, v in meta.items()):
        raise ConfigError("endpoint meta: expected an object of short strings", "endpoints")
    return Endpoint(_text(d, "id", "endpoints"), _text(d, "address", "endpoints"),
                    _int(d, "port", "endpoints", 1, 65535),
                    _int(d, "weight", "endpoints", 0, MAX_WEIGHT, 1),
                    _text(d, "zone", "endpoints", ""), _text(d, "node", "endpoints", ""),
                    _bool(d, "healthy", "endpoints", True), tuple(sorted(meta.items())))


# What a snapshot may hold: the version is a JSON-safe integer (a float above 2**53
# would round, and it is a Prometheus gauge), strings and lists are short.
MAX_VERSION = 2**53 - 1
MAX_TEXT = 1024
MAX_ITEMS = 10_000
MAX_WEIGHT = 10_000
ENDPOINT_KEYS = frozenset({"id", "address", "port", "weight", "zone", "node", "healthy",
                           "meta"})
LISTENER_KEYS = frozenset({"name", "direction", "host", "port", "protocol", "head_timeout",
                           "idle_timeout", "max_connections", "detect_timeout"})
TLS_KEYS = frozenset({"cert", "key", "roots", "trust_domain", "namespace", "serial"})
TRUST_DOMAIN = re.compile(r"[a-z0-9]([a-z0-9.-]{0,251}[a-z0-9])?")
NAMESPACE = re.compile(r"[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?")


def _shown(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def _is_text(value: object) -> bool:
    return isinstance(value, str) and len(value) <= MAX_TEXT


def _text(d: dict[str, Any], key: str, where: str, default: str | None = None) -> str:
    value = d.get(key, default)
    if not _is_text(value):
        raise ConfigError(f"{key}: expected a string of at most {MAX_TEXT} characters, "
                          f"got {_shown(value)}", where)
    assert isinstance(value, str)
    return value


def _int(d: dict[str, Any], key: str, where: str, low: int, high: int,
         default: int | None = None) -> int:
    value = d.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise ConfigError(f"{key}: expected an integer from {low} to {high}, "
                          f"got {_shown(value)}", where)
    return value


def _seconds(d: dict[str, Any], key: str, where: str, high: float, default: float) -> float:
    value = d.get(key, default)
    if isinstance(value, bool) or not isinstance(value, (int, float)) \
            or not math.isfinite(value) or not 0 < value <= high:
        raise ConfigError(f"{key}: expected a number of seconds in (0, {high:g}], "
                          f"got {_shown(value)}", where)
    return float(value)


def _bool(d: dict[str, Any], key: str, where: str, default: bool) -> bool:
    value = d.get(key, default)
    if not isinstance(value, bool):
        raise ConfigError(f"{key}: expected true or false, got {_shown(value)}", where)
    return value


def _items(value: Any, kind: type[list[Any]] | type[dict[str, Any]], key: str) -> Any:
    if not isinstance(value, (list, dict)) or not isinstance(value, kind) \
            or len(value) > MAX_ITEMS:
        raise ConfigError(f"{key}: expected {'a list' if kind is list else 'an object'} "
                          f"of at most {MAX_ITEMS} items, got {_shown(value)}", key)
    return value


def listener_from_dict(d: Any) -> ListenerConfig:
    if not isinstance(d, dict) or not set(d) <= LISTENER_KEYS:
        raise ConfigError(f"listener: expected an object with keys from "
                          f"{sorted(LISTENER_KEYS)}, got {_shown(d)}", "listeners")
    lc = ListenerConfig(_text(d, "name", "listeners"), _text(d, "direction", "listeners"),
                        _text(d, "host", "listeners"), _int(d, "port", "listeners", 0, 65535),
                        _text(d, "protocol", "listeners", "http"),
                        _seconds(d, "head_timeout", "listeners", MAX_HEAD_TIMEOUT, HEAD_TIMEOUT),
                        _seconds(d, "idle_timeout", "listeners", MAX_HEAD_TIMEOUT, IDLE_TIMEOUT),
                        _int(d, "max_connections", "listeners", 1, MAX_MAX_CONNECTIONS,
                             MAX_CONNECTIONS),
                        _seconds(d, "detect_timeout", "listeners", MAX_HEAD_TIMEOUT,
                                 DETECT_TIMEOUT))
    if lc.direction not in ("inbound", "outbound"):
        raise ConfigError(f"listener {lc.name}: bad direction {lc.direction!r}", "listeners")
    if lc.protocol not in PROTOCOLS:
        raise ConfigError(f"listener {lc.name}: bad protocol {lc.protocol!r}", "listeners")
    return lc


def tls_from_dict(d: Any) -> TlsConfig | None:
    """The ``tls`` block (None when absent or null); raise ConfigError (field ``tls``)
    unless well formed. Files are read by the sidecar (``proxy/mesh_tls.py``)."""
    if d is None:
        return None
    if not isinstance(d, dict) or not set(d) <= TLS_KEYS:
        raise ConfigError(f"tls: expected an object with keys from {sorted(TLS_KEYS)}, "
                          f"got {_shown(d)}", "tls")
    tls = TlsConfig(_text(d, "cert", "tls"), _text(d, "key", "tls"), _text(d, "roots", "tls"),
                    _text(d, "trust_domain", "tls"), _text(d, "namespace", "tls", "default"),
                    _text(d, "serial", "tls", ""))
    for path in (tls.cert, tls.key, tls.roots):
        if not path.startswith("/"):
            raise ConfigError(f"tls: {path!r} is not an absolute path", "tls")
    if not TRUST_DOMAIN.fullmatch(tls.trust_domain):
        raise ConfigError(f"tls: trust_domain {tls.trust_domain!r} is not a DNS name",
                          "tls")
    if not NAMESPACE.fullmatch(tls.namespace):
        raise ConfigError(f"tls: namespace {tls.namespace!r} is not a DNS label", "tls")
    return tls


def intentions_from_dict(d: Any) -> IntentionsConfig | None:
    """The ``intentions`` block (None when absent or null: nothing enforced); raise
    ConfigError (field ``intentions``) unless well formed."""
    if d is None:
        return None
    if not isinstance(d, dict) or not set(d) <= {"default_policy", "intentions"}:
        raise ConfigError(f"intentions: expected an object with default_policy and "
                          f"intentions, got {_shown(d)}", "intentions")
    default = d.get("default_policy", "allow")
    if default not in ACTIONS:
        raise ConfigError("intentions: default_policy must be allow or deny", "intentions")
    rules = []
    for n, raw in enumerate(_items(d.get("intentions", []), list, "intentions")):
        if isinstance(raw, dict):
            raw = {k: v for k, v in raw.items() if k != "precedence"}  # as the API shows
        try:
            rules.append(Intention.from_dict(raw))
        except IntentionError as exc:
            raise ConfigError(f"intentions[{n}]: {exc}", "intentions") from None
    return IntentionsConfig(str(default), tuple(rules))


def cluster_from_dict(name: str, c: Any) -> ClusterConfig:
    if not isinstance(c, dict):
        raise ConfigError(f"cluster {_shown(name)}: expected an object", "clusters")
    settings = c.get("settings", {})
    if not isinstance(settings, dict):
        raise ConfigError(f"cluster {name}: settings: expected an object", "settings")
    return ClusterConfig(_text(c, "name", "clusters", name),
                         tuple(endpoint_from_dict(e)
                               for e in _items(c.get("endpoints", []), list, "endpoints")),
                         dict(settings))


@dataclass(frozen=True)
class ClusterConfig:
    """One upstream service as the sidecar sees it: healthy endpoints and settings."""

    name: str
    endpoints: tuple[Endpoint, ...] = ()
    settings: dict[str, Any] = field(default_factory=dict)

    @property
    def effective(self) -> dict[str, Any]:
        return effective(self.settings)


@dataclass(frozen=True)
class ListenerConfig:
    """``inbound`` forwards to the local app; ``outbound`` to cluster ``name``.
    ``head_timeout``: seconds a client has to send a request head whole (http);
    ``idle_timeout``: seconds a kept-alive connection may wait for its next request;
    ``max_connections``: client connections held at once (both http);
    ``detect_timeout``: seconds to wait for a client's first byte before relaying the
    connection as bytes (http; at or above head_timeout: never, see proxy/opaque.py)."""

    name: str
    direction: str
    host: str
    port: int
    protocol: str = "http"
    head_timeout: float = HEAD_TIMEOUT
    idle_timeout: float = IDLE_TIMEOUT
    max_connections: int = MAX_CONNECTIONS
    detect_timeout: float = DETECT_TIMEOUT


@dataclass(frozen=True)
class TlsConfig:
    """Mutual TLS between sidecars: the workload's certificate, key and trust bundle
    (PEM files the agent keeps), and what names identities: a service's SPIFFE ID is
    ``spiffe://<trust_domain>/ns/<namespace>/svc/<service>``. ``serial`` changes when
    the files do, so a snapshot that only renews them still differs."""

    cert: str
    key: str
    roots: str
    trust_domain: str
    namespace: str = "default"
    serial: str = ""

    def identity(self, service: str) -> str:
        return f"spiffe://{self.trust_domain}/ns/{self.namespace}/svc/{service}"


@dataclass(frozen=True)
class IntentionsConfig:
    """Who may call this sidecar's service: the intentions that name it (or ``*``),
    and the cluster's default policy; enforced by the inbound listener."""

    default_policy: str = "allow"
    intentions: tuple[Intention, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return {"default_policy": self.default_policy,
                "intentions": [i.to_dict() for i in self.intentions]}


@dataclass(frozen=True)
class Snapshot:
    version: int
    service: str
    instance: str
    listeners: tuple[ListenerConfig, ...]
    clusters: dict[str, ClusterConfig]
    zone: str = ""
    node: str = ""
    tls: TlsConfig | None = None
    intentions: IntentionsConfig | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "version": self.version, "service": self.service, "instance": self.instance,
            "zone": self.zone, "node": self.node,
            "tls": None if self.tls is None else vars(self.tls),
            "intentions": None if self.intentions is None else self.intentions.to_dict(),
            "listeners": [vars(lc) for lc in self.listeners],
            "clusters": {
                name: {"name": c.name, "endpoints": [endpoint_to_dict(e) for e in c.endpoints],
                       "settings": c.settings, "effective": c.effective}
                for name, c in sorted(self.clusters.items())},
        }

    @classmethod
    def from_dict(cls, d: Any) -> Snapshot:
        """Raise ConfigError if ``d`` is not a well-formed snapshot. ``version`` orders
        snapshots (0 is the bootstrap's; see ``Sidecar.apply``)."""
        if not isinstance(d, dict) or "version" not in d:
            raise ConfigError(f"malformed sidecar snapshot: expected an object with a "
                              f"version, got {_shown(d)}", "snapshot")
        version = _int(d, "version", "version", 0, MAX_VERSION)
        listeners = tuple(listener_from_dict(lc)
                          for lc in _items(d.get("listeners", []), list, "listeners"))
        clusters = _items(d.get("clusters", {}), dict, "clusters")
        return cls(version, _text(d, "service", "snapshot", ""),
                   _text(d, "instance", "snapshot", ""), listeners,
                   {_text({"name": n}, "name", "clusters"): cluster_from_dict(n, c)
                    for n, c in clusters.items()},
                   _text(d, "zone", "snapshot", ""), _text(d, "node", "snapshot", ""),
                   tls_from_dict(d.get("tls")), intentions_from_dict(d.get("intentions")))

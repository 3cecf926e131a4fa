"""The API described as an OpenAPI 3.1 document, served at ``/v1/openapi.json``.

One table, ``OPERATIONS``, names every route with its body and query parameters; the
request schemas come from the pydantic models that validate the bodies, so the
document cannot drift from what the server accepts. A route the router serves but the
table does not name fails ``tests/unit/test_openapi.py``, as does a stale entry.
Clients and fuzzers (``schemathesis`` in CI) read it; nothing in the server reads it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel

import meshlet
from meshlet.api.ca import SignBody
from meshlet.api.objects import ApplyBody, ScaleBody, StatusBody
from meshlet.api.pods import PodBody, PodReportBody
from meshlet.api.schemas import (
    AddressBody,
    CidrBody,
    ContainerBody,
    ContainerStatusBody,
    DesiredBody,
    HealthBody,
    NetworkBody,
    NodeBody,
    PeerBody,
    RegisterBody,
)
from meshlet.security.acl import (
    ACCESS,
    KINDS,
    MAX_DESCRIPTION,
    MAX_NAME,
    MAX_NODE_IDENTITIES,
    MAX_POLICIES,
    MAX_PREFIX,
    MAX_RULES,
)

JSON_OBJECT = "json-object"  # a body that is any JSON object (configuration settings)
RAW_BYTES = "bytes"  # a body taken as it is (a KV value)

INDEX = ("index", "integer", "a blocking query: answer once the index exceeds this")
WAIT = ("wait", "string", "how long a blocking query may wait, e.g. 30s (at most 10m)")
CONSISTENCY = ("consistency", "string", "stale, default or consistent")
MAX_STALE = ("max_stale", "string", "with stale reads: the staleness allowed, e.g. 5s")
CAS = ("cas", "integer", "write only if the entry's modify index is this (0: absent)")
READS = (CONSISTENCY, MAX_STALE)
BLOCKING = (INDEX, WAIT, *READS)
Query = tuple[str, str, str]
OBJECT = "/v1/objects/{kind}/{namespace}/{name}"

# Bodies parsed without a pydantic model (security/acl.py checks them by hand), described
# from the same bounds.
NAME_SCHEMA = {"type": "string", "pattern": "^[A-Za-z0-9][A-Za-z0-9_.-]*$",
               "maxLength": MAX_NAME}
DESCRIPTION_SCHEMA = {"type": "string", "maxLength": MAX_DESCRIPTION}
SERVICE_OR_ANY = {"type": "string", "maxLength": 63,
                  "pattern": "^([a-z0-9]([a-z0-9-]*[a-z0-9])?|[*])$"}
HAND_CHECKED: dict[str, dict[str, Any]] = {
    "IntentionBody": {"type": "object", "additionalProperties": False,
                      "required": ["source", "destination"], "properties": {
        "source": SERVICE_OR_ANY, "destination": SERVICE_OR_ANY,
        "action": {"enum": ["allow", "deny"]},
        "description": DESCRIPTION_SCHEMA,
        "permissions": {"type": "array", "maxItems": 64, "items": {"type": "object"}}}},
    "TokenBody": {"type": "object", "additionalProperties": False, "properties": {
        "description": DESCRIPTION_SCHEMA,
        "policies": {"type": "array", "items": NAME_SCHEMA, "maxItems": MAX_POLICIES,
                     "uniqueItems": True},
        "management": {"type": "boolean"},
        "node_identities": {"type": "array", "items": NAME_SCHEMA,
                            "maxItems": MAX_NODE_IDENTITIES, "uniqueItems": True}}},
    "PolicyBody": {"type": "object", "additionalProperties": False, "required": ["name"],
                   "properties": {
        "name": NAME_SCHEMA,
        "description": DESCRIPTION_SCHEMA,
        "rules": {"type": "array", "maxItems": MAX_RULES, "items": {
            "type": "object", "additionalProperties": False,
            "required": ["kind", "access"], "properties": {
                "kind": {"enum": list(KINDS)},
                "prefix": {"type": "string", "maxLength": MAX_PREFIX},
                "access": {"enum": list(ACCESS)}}}}}},
}


@dataclass(frozen=True)
class Operation:
    """One route: what it does, its body and its query parameters."""

    method: str
    path: str
    summary: str
    body: type[BaseModel] | str | None = None
    query: tuple[Query, ...] = ()

    @property
    def writes(self) -> bool:
        return self.method != "GET"


OPERATIONS: tuple[Operation, ...] = (
    Operation("GET", "/v1/status", "This server's view of the cluster"),
    Operation("GET", "/metrics", "Prometheus metrics of this server"),
    Operation("GET", "/v1/openapi.json", "This document"),
    Operation("POST", "/v1/raft/transfer-leader", "Hand leadership to another server",
              query=(("to", "string", "the server to lead next"),)),
    Operation("POST", "/v1/raft/peers", "Add a server to the cluster", PeerBody),
    Operation("DELETE", "/v1/raft/peers/{id}", "Remove a server from the cluster"),
    Operation("GET", "/v1/raft/self", "This server's id and addresses"),
    Operation("PUT", "/v1/catalog/register", "Register a service instance", RegisterBody),
    Operation("PUT", "/v1/catalog/deregister/{id}", "Deregister a service instance"),
    Operation("PUT", "/v1/health/{id}", "Set an instance's health", HealthBody),
    Operation("GET", "/v1/services", "Every service", query=BLOCKING),
    Operation("GET", "/v1/services/{name}/instances", "A service's instances",
              query=(*BLOCKING, ("passing", "boolean", "only instances that pass"))),
    Operation("GET", "/v1/kv", "KV entries under a prefix",
              query=(*BLOCKING, ("prefix", "string", "the keys' common start"))),
    Operation("GET", "/v1/kv/{key}", "One KV entry",
              query=(*BLOCKING, ("recurse", "boolean", "every entry under the key"),
                     ("raw", "boolean", "the value alone, as bytes"))),
    Operation("PUT", "/v1/kv/{key}", "Write a KV entry", RAW_BYTES, (CAS,)),
    Operation("DELETE", "/v1/kv/{key}", "Delete a KV entry", query=(CAS,)),
    Operation("GET", "/v1/config", "Every service's configuration", query=BLOCKING),
    Operation("GET", "/v1/config/{service}", "A service's configuration", query=BLOCKING),
    Operation("PUT", "/v1/config/{service}", "Set a service's configuration", JSON_OBJECT,
              (("replace", "boolean", "replace the settings instead of merging"),)),
    Operation("DELETE", "/v1/config/{service}", "Delete a service's configuration"),
    Operation("GET", "/v1/networks", "Every network", query=BLOCKING),
    Operation("POST", "/v1/networks", "Create a network", NetworkBody),
    Operation("GET", "/v1/networks/{name}", "One network", query=BLOCKING),
    Operation("DELETE", "/v1/networks/{name}", "Remove a network"),
    Operation("PUT", "/v1/networks/{name}/addresses/{owner}",
              "Lease an address on a network", AddressBody),
    Operation("DELETE", "/v1/networks/{name}/addresses/{owner}", "Release an address"),
    Operation("GET", "/v1/containers", "Every container",
              query=(*BLOCKING, ("node", "string", "only those placed on this node"))),
    Operation("POST", "/v1/containers", "Create a container", ContainerBody),
    Operation("GET", "/v1/containers/{name}", "One container", query=BLOCKING),
    Operation("DELETE", "/v1/containers/{name}", "Remove a container"),
    Operation("PUT", "/v1/containers/{name}/desired", "Start or stop a container",
              DesiredBody),
    Operation("PUT", "/v1/containers/{name}/status", "Report a container's state (agents)",
              ContainerStatusBody),
    Operation("PUT", "/v1/containers/{name}/networks/{network}",
              "Connect a container to a network"),
    Operation("DELETE", "/v1/containers/{name}/networks/{network}",
              "Disconnect a container from a network"),
    Operation("GET", "/v1/nodes", "Every node", query=BLOCKING),
    Operation("PUT", "/v1/nodes/{name}", "Register a node (agents)", NodeBody),
    Operation("DELETE", "/v1/nodes/{name}", "Deregister a node"),
    Operation("GET", "/v1/vips", "Every service's virtual IP", query=BLOCKING),
    Operation("PUT", "/v1/vips/cidr", "Set the range virtual IPs come from", CidrBody),
    Operation("GET", "/v1/signals", "Golden signals per service and per edge"),
    Operation("GET", "/v1/acl/tokens", "Every ACL token (without secrets)", query=BLOCKING),
    Operation("POST", "/v1/acl/tokens", "Create a token; its secret is shown this once",
              "TokenBody"),
    Operation("GET", "/v1/acl/tokens/{accessor}", "One token", query=BLOCKING),
    Operation("DELETE", "/v1/acl/tokens/{accessor}", "Delete a token"),
    Operation("GET", "/v1/acl/token/self", "The token this request carries"),
    Operation("GET", "/v1/acl/policies", "Every ACL policy", query=BLOCKING),
    Operation("POST", "/v1/acl/policies", "Create or replace a policy", "PolicyBody"),
    Operation("GET", "/v1/acl/policies/{name}", "One policy", query=BLOCKING),
    Operation("DELETE", "/v1/acl/policies/{name}", "Delete a policy"),
    Operation("GET", "/v1/ca/roots", "The CA's trusted roots (the trust bundle)",
              query=BLOCKING),
    Operation("POST", "/v1/ca/sign", "A workload certificate for a CSR", SignBody),
    Operation("POST", "/v1/ca/rotate", "Make the next root generation the active one"),
    Operation("GET", "/v1/intentions", "Every intention and the default policy",
              query=BLOCKING),
    Operation("PUT", "/v1/intentions", "Create or replace an intention", "IntentionBody"),
    Operation("DELETE", "/v1/intentions/{source}/{destination}", "Delete an intention"),
    Operation("GET", "/v1/intentions/check", "Whether a source may call a destination",
              query=(("source", "string", "the calling service"),
                     ("destination", "string", "the service called"),
                     ("method", "string", "an HTTP method, for L7 intentions"),
                     ("path", "string", "a path, for L7 intentions"))),
    Operation("GET", "/v1/objects", "Kubernetes objects (`meshlet get`)",
              query=(*BLOCKING, ("kind", "string", "Namespace, Deployment, Service or "
                                 "HorizontalPodAutoscaler"),
                     ("namespace", "string", "only those in this namespace"))),
    Operation("POST", "/v1/objects", "Apply a Kubernetes object: created, configured or "
              "unchanged", ApplyBody),
    Operation("GET", OBJECT, "One object (NAMESPACE is - for a Namespace)", query=BLOCKING),
    Operation("DELETE", OBJECT, "Delete an object (a Namespace: with what is in it)"),
    Operation("POST", OBJECT + "/scale", "Set a Deployment's replicas", ScaleBody),
    Operation("PUT", OBJECT + "/status", "Record an object's status and events "
              "(the controller)", StatusBody),
    Operation("GET", "/v1/pods", "Pods: Deployments' replicas",
              query=(*BLOCKING, ("node", "string", "only those placed on this node"),
                     ("namespace", "string", "only those in this namespace"),
                     ("deployment", "string", "only this Deployment's"))),
    Operation("POST", "/v1/pods", "Place a pod (the controller)", PodBody),
    Operation("GET", "/v1/pods/{name}", "One pod", query=BLOCKING),
    Operation("DELETE", "/v1/pods/{name}", "Forget a pod (the controller; its agent once "
              "it has stopped a terminating one)"),
    Operation("PUT", "/v1/pods/{name}/report", "Report a pod's state (its agent)",
              PodReportBody),
    Operation("PUT", "/v1/pods/{name}/terminate", "Ask a pod's agent to stop it"),
)

ERROR_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["error"],
    "properties": {"error": {"type": "object", "required": ["code", "message"],
                             "properties": {"code": {"type": "string"},
                                            "message": {"type": "string"},
                                            "field": {"type": ["string", "null"]}}}},
}


def path_parameters(path: str) -> list[str]:
    return [part[1:-1] for part in path.split("/") if part.startswith("{")]


def request_body(body: type[BaseModel] | str) -> dict[str, Any]:
    if body == RAW_BYTES:
        content = {"application/octet-stream": {"schema": {"type": "string",
                                                           "format": "binary"}}}
    elif body == JSON_OBJECT:
        content = {"application/json": {"schema": {"type": "object"}}}
    elif isinstance(body, str):
        content = {"application/json": {"schema": {"$ref": f"#/components/schemas/{body}"}}}
    else:
        assert isinstance(body, type)
        content = {"application/json": {"schema": {"$ref":
                                                   f"#/components/schemas/{body.__name__}"}}}
    return {"required": True, "content": content}


def operation_object(op: Operation) -> dict[str, Any]:
    params: list[dict[str, Any]] = [
        {"name": name, "in": "path", "required": True,
         "schema": {"type": "string", "minLength": 1, "pattern": "^[^/]+$"}}
        for name in path_parameters(op.path)]
    params += [{"name": name, "in": "query", "required": False, "description": text,
                "schema": {"type": kind, **({"minimum": 0} if kind == "integer" else {})}}
               for name, kind, text in op.query]
    error = {"content": {"application/json": {"schema": {"$ref":
                                                         "#/components/schemas/Error"}}}}
    out: dict[str, Any] = {
        "summary": op.summary,
        "operationId": f"{op.method.lower()}{op.path.replace('/', '_')}"
                       .replace("{", "").replace("}", "").replace(".", "_").replace("-", "_"),
        "parameters": params,
        "responses": {"200": {"description": "done"},
                      "4XX": {"description": "refused; nothing changed", **error}},
    }
    if op.body is not None:
        out["requestBody"] = request_body(op.body)
    return out


def document() -> dict[str, Any]:
    """The whole document; cheap enough to build once per server."""
    paths: dict[str, dict[str, Any]] = {}
    schemas: dict[str, Any] = {"Error": ERROR_SCHEMA, **HAND_CHECKED}
    for op in OPERATIONS:
        paths.setdefault(op.path, {})[op.method.lower()] = operation_object(op)
        if isinstance(op.body, type):
            schemas[op.body.__name__] = op.body.model_json_schema(
                ref_template="#/components/schemas/{model}")
    return {"openapi": "3.1.0",
            "info": {"title": "meshlet", "version": meshlet.__version__},
            "paths": paths,
            "security": [{"token": []}, {"bearer": []}],
            "components": {"schemas": schemas, "securitySchemes": {
                "token": {"type": "apiKey", "in": "header", "name": "X-Meshlet-Token"},
                "bearer": {"type": "http", "scheme": "bearer"}}}}

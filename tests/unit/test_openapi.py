"""The OpenAPI document names every route the server serves, and only those."""

from __future__ import annotations

import json
from typing import Any

from meshlet.api import openapi
from meshlet.api.routes import Api
from meshlet.state import StateMachine


class StubNode:
    """Just enough of a ControlPlane to build the router."""

    def __init__(self) -> None:
        self.machine = StateMachine()
        self.is_leader = True

    def status(self) -> dict[str, Any]:
        return {}


class StubHeartbeats:
    ttl = 30.0

    def heard_from(self, name: str) -> None:
        pass


def served_routes() -> set[tuple[str, str]]:
    """Every route but the web UI's static files (``api/ui.py``), which are no API."""
    app = Api(StubNode(), StubHeartbeats()).app()  # type: ignore[arg-type]
    return {(route.method, route.resource.canonical)
            for route in app.router.routes()
            if route.method != "HEAD" and route.resource is not None
            and not route.resource.canonical.startswith("/ui")}


def test_every_route_is_described_and_nothing_else() -> None:
    described = {(op.method, op.path) for op in openapi.OPERATIONS}
    assert served_routes() == described


def test_document_is_valid_openapi_with_body_schemas() -> None:
    doc = openapi.document()
    json.dumps(doc)  # serialisable
    assert doc["openapi"].startswith("3.1")
    register = doc["paths"]["/v1/catalog/register"]["put"]
    ref = register["requestBody"]["content"]["application/json"]["schema"]["$ref"]
    schema = doc["components"]["schemas"][ref.rsplit("/", 1)[1]]
    assert schema["properties"]["port"]["maximum"] == 65535
    assert "port" in schema["required"]
    params = {p["name"] for p in doc["paths"]["/v1/services/{name}/instances"]["get"][
        "parameters"]}
    assert {"name", "index", "wait", "passing", "consistency"} <= params


def test_schemathesis_loads_every_operation() -> None:
    import schemathesis
    loaded = schemathesis.openapi.from_dict(openapi.document())
    operations = [result.ok() for result in loaded.get_all_operations()]
    assert len(operations) == len(openapi.OPERATIONS)

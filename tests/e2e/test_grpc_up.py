"""gRPC end to end under `meshlet up`: a service declared ``protocol: grpc`` with three
real grpcio replicas, called by grpcio through a caller's sidecar and through the
agent's ingress gateway; calls balanced per call, UNAVAILABLE retried once the
service's config says so."""

from __future__ import annotations

import json
import sys
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from tests.e2e.helpers import free_port
from tests.e2e.test_data_plane import Mesh, healthy_mesh

pytestmark = pytest.mark.e2e
APPS = Path(__file__).parent / "apps"


def grpc_manifest(home: Path, ingress: int) -> Path:
    manifest = home / "grpc.json"  # YAML's superset: the manifest in JSON
    manifest.write_text(json.dumps({"services": {
        "greeter": {"command": [sys.executable, str(APPS / "grpc_echo.py")],
                    "replicas": 3, "protocol": "grpc", "ingress": ingress,
                    "check": {"tcp": True, "interval": "200ms", "timeout": "1s"}},
        "caller": {"command": [sys.executable, str(APPS / "echo.py")],
                   "upstreams": ["greeter"],
                   "check": {"http": "/health", "interval": "200ms", "timeout": "1s"}},
    }}))
    return manifest


class GrpcMesh(Mesh):
    def __init__(self, home: Path) -> None:
        self.ingress = free_port()
        super().__init__(home, grpc_manifest(home, self.ingress), "greeter")

    def outbound(self) -> str:
        return f"127.0.0.1:{self.echo_port()}"


@pytest.fixture(scope="module")
def mesh(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GrpcMesh]:
    home = tmp_path_factory.mktemp("grpc")
    for running in healthy_mesh(home, GrpcMesh(home)):
        assert isinstance(running, GrpcMesh)
        yield running


def calls(target: str, method: str, requests: list[bytes]) -> list[bytes]:
    with grpc.insecure_channel(target, options=[("grpc.enable_http_proxy", 0)]) as channel:
        call = channel.unary_unary(f"/demo.Echo/{method}")
        return [call(r, timeout=10) for r in requests]


def test_calls_through_the_callers_sidecar_spread_over_the_replicas(mesh: GrpcMesh) -> None:
    answers = calls(mesh.outbound(), "Say", [b"r%d" % i for i in range(30)])
    served = Counter(a.split(b":")[0].decode() for a in answers)
    replicas = {i["id"] for i in mesh.json("instances", "greeter")}
    assert set(served) == replicas and len(replicas) == 3
    assert set(served.values()) == {10}  # round robin, per call on one channel
    assert answers[7].endswith(b":r7")


def test_calls_through_the_ingress_gateway(mesh: GrpcMesh) -> None:
    answers = calls(f"127.0.0.1:{mesh.ingress}", "Say", [b"in%d" % i for i in range(6)])
    assert len({a.split(b":")[0] for a in answers}) == 3
    assert answers[0].endswith(b":in0")


def test_unavailable_is_retried_once_the_services_config_says_so(mesh: GrpcMesh) -> None:
    failing = mesh.json("instances", "greeter")[0]["id"]
    with pytest.raises(grpc.RpcError) as refused:  # no retry_on yet: the caller sees it
        for _ in range(3):
            calls(mesh.outbound(), "Fail", [failing.encode()])
    assert refused.value.code() == grpc.StatusCode.UNAVAILABLE
    mesh.config("retry_on=unavailable", "retries=2")
    answers = calls(mesh.outbound(), "Fail", [failing.encode()] * 12)
    assert len(answers) == 12 and failing.encode() not in answers

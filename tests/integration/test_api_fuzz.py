"""Schemathesis fuzzes every operation of /v1/openapi.json against a real server
process: no answer may be a 5xx, and whatever the fuzz wrote must survive a kill -9
and a restart unchanged.

The fuzz carries the management token, so it reaches every handler; a second pass
without a token must get 401 from every /v1 operation, changing nothing. Bounded: a
few examples per operation (``MESHLET_FUZZ_EXAMPLES``, default 12) and no
shrinking. A blocking query is sent with ``wait=0s`` so a fuzzed ``index`` cannot
hold a request for the default five minutes. The three Raft membership operations
are left out: a fuzzed peer joining a one-server cluster takes away its quorum, which
is what Raft must do; tests/e2e/test_raft_membership.py covers them.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, settings

from meshlet.api import openapi
from tests.conftest import management_token
from tests.e2e.helpers import free_port, wait_for

EXAMPLES = int(os.environ.get("MESHLET_FUZZ_EXAMPLES", "12"))
MEMBERSHIP = r"^/v1/raft/(peers|transfer-leader)"
READS = ("/v1/kv?recurse=1", "/v1/services", "/v1/config", "/v1/networks",
         "/v1/containers", "/v1/nodes", "/v1/vips")

schema = schemathesis.openapi.from_dict(openapi.document()).exclude(path_regex=MEMBERSHIP)


class ServerProcess:
    """``meshlet server`` on a loopback port, restartable on the same data."""

    def __init__(self, data: Path) -> None:
        self.data = data
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen[bytes] | None = None
        self.token = ""

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "meshlet", "server", "--data-dir", str(self.data),
             "--http", f"127.0.0.1:{self.port}"],
            stdout=subprocess.DEVNULL, stderr=open(self.data / "fuzz-server.log", "ab"))
        self.token = management_token(self.data)
        wait_for(self.leads, 20, "the fuzzed server to lead")

    def leads(self) -> bool:
        try:
            return bool(self.get("/v1/status").get("leader"))
        except OSError:
            return False

    def get(self, path: str) -> Any:
        request = urllib.request.Request(self.url + path,
                                         headers={"X-Meshlet-Token": self.token})
        with urllib.request.urlopen(request, timeout=10) as resp:
            return json.load(resp)

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)

    def state(self) -> dict[str, Any]:
        return {path: self.get(path) for path in READS}


@pytest.fixture(scope="module")
def fuzzed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    server = ServerProcess(tmp_path_factory.mktemp("fuzz"))
    server.start()
    yield server
    if server.proc is not None and server.proc.poll() is None:
        server.kill()


def test_served_document_is_the_code_s(fuzzed: ServerProcess) -> None:
    assert fuzzed.get("/v1/openapi.json") == json.loads(json.dumps(openapi.document()))


@schema.parametrize()
@settings(max_examples=EXAMPLES, deadline=None, derandomize=True,
          phases=[Phase.explicit, Phase.generate],
          suppress_health_check=list(HealthCheck))
def test_no_operation_answers_5xx_and_every_success_carries_the_index(
        case: schemathesis.Case, fuzzed: ServerProcess) -> None:
    if isinstance(case.query, dict) and "index" in case.query:
        case.query["wait"] = "0s"
    response = case.call(base_url=fuzzed.url, timeout=20,
                         headers={"X-Meshlet-Token": fuzzed.token})
    assert response.status_code < 500, (
        f"{case.method} {case.formatted_path} answered {response.status_code}: "
        f"{response.text[:500]}")
    # What the client tells a meshlet server's answer from another's by.
    if 200 <= response.status_code < 300 and case.formatted_path.startswith("/v1/"):
        index = response.headers.get("x-meshlet-index", [""])  # lowercased, as lists
        assert len(index) == 1 and index[0].isdigit(), (
            f"{case.method} {case.formatted_path} answered {response.status_code} "
            "without X-Meshlet-Index")


@schema.exclude(path="/metrics").parametrize()
@settings(max_examples=2, deadline=None, derandomize=True,
          phases=[Phase.explicit, Phase.generate],
          suppress_health_check=list(HealthCheck))
def test_without_a_token_every_v1_operation_is_401(case: schemathesis.Case,
                                                    fuzzed: ServerProcess) -> None:
    if isinstance(case.query, dict) and "index" in case.query:
        case.query["wait"] = "0s"
    index = fuzzed.get("/v1/status")["index"]
    response = case.call(base_url=fuzzed.url, timeout=20)
    served = case.method.upper() == case.operation.method.upper()
    assert response.status_code == 401 or (not served and response.status_code == 405), (
        f"{case.method} {case.formatted_path} without a token answered "
        f"{response.status_code}: {response.text[:300]}")
    assert fuzzed.get("/v1/status")["index"] == index


def test_fuzzed_state_survives_kill_and_restart(fuzzed: ServerProcess) -> None:
    before = fuzzed.state()
    fuzzed.kill()
    fuzzed.start()
    assert fuzzed.state() == before

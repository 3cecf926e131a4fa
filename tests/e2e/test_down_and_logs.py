"""`meshlet down` signals only the `meshlet up` it recorded, never a process that merely
has the pid in its record; `meshlet logs` prints only the agent's own log of a
container, whatever log path the API holds; server data reaches the terminal without
escape sequences."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from meshlet.process_identity import identity
from tests.e2e.helpers import lone_server, meshlet, token_header, wait_for


def test_down_leaves_a_process_that_is_not_the_recorded_up_alone(tmp_path: Path) -> None:
    sleeper = subprocess.Popen(["sleep", "600"])
    try:
        # Popen returns a moment before the kernel has set the new command line up.
        wait_for(lambda: (me := identity(sleeper.pid)) is not None and me.cmdline, 10,
                 "sleep's command line")
        truth = identity(sleeper.pid)
        assert truth is not None
        api = {"api": "http://127.0.0.1:1", "workloads": []}
        records: list[dict[str, Any]] = [
            {"pid": sleeper.pid, **api},                  # a pid alone (or an old record)
            {**truth.to_dict(), **api},                   # the sleep itself: no meshlet up
            {**truth.to_dict(), **api,                    # says it is one: wrong cmdline
             "cmdline": [sys.executable, "-m", "meshlet", "up"]},
        ]
        for record in records:
            (tmp_path / "up.json").write_text(json.dumps(record))
            out = meshlet("down", home=tmp_path, check=False)
            assert out.returncode == 1 and "nothing to stop" in out.stderr, out.stderr
            assert sleeper.poll() is None, record          # not signalled
            assert not (tmp_path / "up.json").exists()     # the stale record is gone
    finally:
        sleeper.kill()
        sleeper.wait()


@pytest.fixture
def server(tmp_path: Path) -> Iterator[str]:
    with lone_server(tmp_path) as addr:
        yield addr


def api(addr: str, home: Path, method: str, path: str, body: dict[str, Any]) -> None:
    """A request with the management token of lone_server's data under ``home``."""
    req = urllib.request.Request(f"{addr}{path}", data=json.dumps(body).encode(),
                                 method=method, headers={"Content-Type": "application/json",
                                                         **token_header(home)})
    urllib.request.urlopen(req, timeout=10).close()


def test_logs_reads_the_agents_own_file_and_nothing_the_api_points_at(
        server: str, tmp_path: Path) -> None:
    secret = tmp_path / "secret.txt"
    secret.write_text("TOPSECRET\n")
    # A caller of the API registers a container whose log is someone else's file.
    api(server, tmp_path, "POST", "/v1/containers", {"name": "web", "node": os.uname().nodename,
                                           "command": ["true"]})
    api(server, tmp_path, "PUT", "/v1/containers/web/status",
        {"status": "exited", "exit_code": 0, "log": str(secret)})
    run = lambda *a: meshlet("--addr", server, *a, home=tmp_path, check=False)

    refused = run("logs", "web")
    assert refused.returncode == 1 and "TOPSECRET" not in refused.stdout
    assert "no output of 'web' on this host" in refused.stderr

    # Planted in the agent's directory as a symlink: refused, not followed.
    containers = tmp_path / "agent" / "containers"
    containers.mkdir(parents=True)
    (containers / "web.log").symlink_to(secret)
    refused = run("logs", "web")
    assert refused.returncode == 1 and "TOPSECRET" not in refused.stdout
    assert "refusing to read" in refused.stderr and "Traceback" not in refused.stderr

    # The agent's own file (as `meshlet agent` keeps it by default) is printed.
    (containers / "web.log").unlink()
    (containers / "web.log").write_text("hello from web\n")
    assert run("logs", "web").stdout == "hello from web\n"
    elsewhere = tmp_path / "other-agent"
    (elsewhere / "containers").mkdir(parents=True)
    (elsewhere / "containers" / "web.log").write_text("from the other agent\n")
    assert run("logs", "web", "--data-dir", str(elsewhere)).stdout == \
        "from the other agent\n"


def test_server_strings_reach_the_terminal_without_escapes(server: str,
                                                           tmp_path: Path) -> None:
    key = "app/\x1b[2J\x1b]0;owned\x07name"
    api(server, tmp_path, "PUT", "/v1/kv/" + urllib.request.quote(key, safe="/"), {})
    listing = meshlet("--addr", server, "kv", "list", "app/", home=tmp_path)
    assert "\x1b" not in listing.stdout and "\x07" not in listing.stdout
    assert "app/name" in listing.stdout
    as_json = json.loads(meshlet("--addr", server, "-o", "json", "kv", "list", "app/",
                                 home=tmp_path).stdout)
    assert [e["key"] for e in as_json] == [key]  # the data itself is kept, escaped in JSON

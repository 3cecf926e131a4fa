"""The CLI against a real server: output, exit codes, and one-line errors."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import management_token
from tests.e2e.helpers import (
    env_for,
    free_port,
    free_ports,
    lone_server,
    meshlet,
    meshlet_json,
    stop_processes,
    wait_for,
)


@pytest.fixture
def server(tmp_path: Path) -> Iterator[str]:
    with lone_server(tmp_path) as addr:
        yield addr


def test_ca_roots_and_rotation_through_the_cli(server: str, tmp_path: Path) -> None:
    run = lambda *a, **kw: meshlet("--addr", server, *a, home=tmp_path, **kw)
    listed = run("ca", "roots").stdout.splitlines()
    assert listed[0].startswith("trust domain: c") and listed[0].endswith(".meshlet")
    assert listed[1].split() == ["GENERATION", "ACTIVE", "ACTIVE", "SINCE", "NOT", "AFTER",
                                 "FINGERPRINT"]
    assert listed[2].split()[:3] == ["0", "yes", "-"] and len(listed) == 3
    assert run("ca", "rotate").stdout == "root generation 1 is active; trusted: 0, 1\n"
    rows = run("ca", "roots").stdout.splitlines()[2:]
    assert [r.split()[:2] for r in rows] == [["0", "no"], ["1", "yes"]]
    bundle = run("ca", "roots", "--pem").stdout
    assert bundle.count("-----BEGIN CERTIFICATE-----") == 2 and "PRIVATE" not in bundle
    body = meshlet_json("--addr", server, "ca", "roots", home=tmp_path)
    assert body["active_generation"] == 1 and len(body["roots"]) == 2


def test_acl_tokens_and_policies_through_the_cli(server: str, tmp_path: Path) -> None:
    run = lambda *a, **kw: meshlet("--addr", server, *a, home=tmp_path, **kw)
    made = run("acl", "policy", "create", "app", "--rule", "kv:app/:write",
               "--rule", "service::read", "--description", "the app").stdout
    assert made.strip() == "policy app: 2 rules"
    assert "kv:app/:write service::read" in run("acl", "policy", "list").stdout
    token = meshlet_json("--addr", server, "acl", "token", "create", "--policy", "app",
                         home=tmp_path)
    assert token["policies"] == ["app"] and len(token["secret"]) >= 43
    listed = run("acl", "token", "list").stdout
    assert token["accessor"] in listed and token["secret"] not in listed
    as_app = lambda *a: meshlet("--addr", server, "--token", token["secret"], *a,
                                home=tmp_path, check=False)
    assert as_app("kv", "put", "app/x", "1").returncode == 0
    refused = as_app("kv", "put", "db/x", "1")
    assert refused.returncode == 1
    assert refused.stderr == "meshlet: error: this token may not write kv 'db/x'\n"
    after = as_app("kv", "get", "app/x")  # the token goes after the command too
    assert after.stdout == "1\n"
    env = {k: v for k, v in env_for(tmp_path).items() if k != "MESHLET_TOKEN"}
    anonymous = subprocess.run([sys.executable, "-m", "meshlet", "--addr", server, "kv",
                                "get", "app/x"], capture_output=True, text=True, env=env,
                               timeout=60, check=False)
    assert anonymous.returncode == 1
    assert anonymous.stderr.startswith("meshlet: error: this request needs an ACL token")
    in_use = run("acl", "policy", "delete", "app", check=False)
    assert in_use.returncode == 1 and "used by 1 token" in in_use.stderr
    run("acl", "token", "delete", token["accessor"])
    assert as_app("kv", "get", "app/x").stderr == (
        "meshlet: error: the ACL token is not known to this cluster\n")
    assert run("acl", "policy", "delete", "app").stdout == "deleted policy app\n"
    bad = run("acl", "policy", "create", "p", "--rule", "kv-write", check=False)
    assert bad.returncode == 1 and "expected KIND:PREFIX:ACCESS" in bad.stderr


def test_kv_round_trip(server: str, tmp_path: Path) -> None:
    run = lambda *a, **kw: meshlet("--addr", server, *a, home=tmp_path, **kw)
    assert "Success" in run("kv", "put", "app/greeting", "hello world").stdout
    assert run("kv", "get", "app/greeting").stdout == "hello world\n"
    run("kv", "put", "app/blob", stdin="from stdin")
    assert run("kv", "get", "app/blob").stdout == "from stdin\n"
    listing = meshlet_json("--addr", server, "kv", "list", "app/", home=tmp_path)
    assert [e["key"] for e in listing] == ["app/blob", "app/greeting"]
    index = meshlet_json("--addr", server, "kv", "get", "app/greeting",
                         home=tmp_path)["modify_index"]
    stale = run("kv", "put", "app/greeting", "x", "--cas", str(index + 100), check=False)
    assert stale.returncode == 1 and "check-and-set failed" in stale.stderr
    run("kv", "put", "app/greeting", "bye", "--cas", str(index))
    assert "Deleted" in run("kv", "delete", "app/greeting").stdout
    missing = run("kv", "get", "app/greeting", check=False)
    assert missing.returncode == 1 and "not found" in missing.stderr


def test_config_set_get_and_errors(server: str, tmp_path: Path) -> None:
    run = lambda *a, **kw: meshlet("--addr", server, *a, home=tmp_path, **kw)
    run("config", "set", "catalog", "retries=1", "request_timeout=500ms")
    body = meshlet_json("--addr", server, "config", "get", "catalog", home=tmp_path)
    assert body["settings"] == {"retries": 1, "request_timeout": 0.5}
    rows = [line.split() for line in run("config", "get", "catalog").stdout.splitlines()]
    assert ["request_timeout", "0.5", "set"] in rows
    assert ["lb", "round_robin", "default"] in rows
    bad = run("config", "set", "catalog", "lb=fastest", check=False)
    assert bad.returncode == 1
    assert bad.stderr.startswith("meshlet: error: lb: Input should be 'round_robin'")
    assert "Traceback" not in bad.stderr
    assert meshlet_json("--addr", server, "config", "get", "catalog",
                        home=tmp_path)["settings"]["retries"] == 1


def test_errors_are_one_line_without_traceback(tmp_path: Path) -> None:
    down = meshlet("--addr", "http://127.0.0.1:1", "services", home=tmp_path, check=False)
    assert down.returncode == 1
    assert down.stderr.strip().count("\n") == 0
    assert "cannot reach meshlet at http://127.0.0.1:1" in down.stderr
    bad_file = tmp_path / "bad.yaml"
    bad_file.write_text("services:\n  web:\n    command: x\n    replicas: lots\n")
    bad = meshlet("up", str(bad_file), home=tmp_path, check=False)
    assert bad.returncode == 1
    assert f"{bad_file}:4: services.web.replicas:" in bad.stderr
    assert "Traceback" not in bad.stderr
    wrong = meshlet("up", "--http", "nonsense", home=tmp_path, check=False)
    assert wrong.returncode == 1 and "--http: 'nonsense' is not HOST:PORT" in wrong.stderr


def test_services_and_instances_output(server: str, tmp_path: Path) -> None:
    import asyncio

    from meshlet.api.client import Client

    async def register() -> None:
        async with Client(server, token=management_token(tmp_path / "data")) as c:
            await c.register(service="web", id="web-1", port=8080)
            await c.set_health("web-1", "passing", "ok", restarts=2)
    asyncio.run(register())
    out = meshlet("--addr", server, "instances", "web", home=tmp_path).stdout
    assert out.splitlines()[0].split() == ["INSTANCE", "ADDRESS", "STATUS", "RESTARTS", "PID",
                                           "WEIGHT", "OUTPUT"]
    assert out.splitlines()[1].split()[:4] == ["web-1", "127.0.0.1:8080", "passing", "2"]
    assert "web" in meshlet("--addr", server, "services", home=tmp_path).stdout
    unknown = meshlet("--addr", server, "instances", "nope", home=tmp_path, check=False)
    assert unknown.returncode == 1 and "service 'nope' is not known" in unknown.stderr


def test_config_set_from_file_and_json_values(server: str, tmp_path: Path) -> None:
    run = lambda *a, **kw: meshlet("--addr", server, *a, home=tmp_path, **kw)
    spec = tmp_path / "accounts.yaml"
    spec.write_text("lb: maglev\nhash_on: header:x-user\npartition:\n"
                    "  key: header:x-tenant\n  strategy: range\n  ranges:\n"
                    "    - {from: a, to: m, shard: s1}\n    - {from: n, to: z, shard: s2}\n")
    run("config", "set", "accounts", "-f", str(spec))
    body = meshlet_json("--addr", server, "config", "get", "accounts", home=tmp_path)
    assert body["settings"]["partition"]["ranges"][1]["shard"] == "s2"
    assert body["effective"]["lb"] == "maglev"
    run("config", "set", "accounts", 'routes=[{"match": {"path_prefix": "/v2"}}]',
        "retry_on=502,503")
    body = meshlet_json("--addr", server, "config", "get", "accounts", home=tmp_path)
    assert body["settings"]["retry_on"] == [502, 503]
    assert body["settings"]["routes"][0]["match"]["path_prefix"] == "/v2"
    spec.write_text("partition:\n  key: header:x-tenant\n  strategy: range\n  ranges:\n"
                    "    - {from: a, to: m, shard: s1}\n    - {from: k, to: z, shard: s2}\n")
    bad = run("config", "set", "accounts", "-f", str(spec), check=False)
    assert bad.returncode == 1
    assert "partition.ranges.1: from 'k' overlaps" in bad.stderr
    # Nothing changed: the earlier partition is still in force.
    body = meshlet_json("--addr", server, "config", "get", "accounts", home=tmp_path)
    assert body["settings"]["partition"]["ranges"][1]["from"] == "n"


def test_network_commands(server: str, tmp_path: Path) -> None:
    run = lambda *a, **kw: meshlet("--addr", server, *a, home=tmp_path, **kw)
    assert run("network", "create", "front", "--subnet", "10.61.0.0/24").stdout == "front\n"
    run("network", "create", "quiet", "--internal")
    rows = [line.split() for line in run("network", "ls").stdout.splitlines()]
    assert rows[0] == ["NAME", "DRIVER", "SUBNET", "GATEWAY", "INTERNAL", "ATTACHED"]
    assert ["front", "bridge", "10.61.0.0/24", "10.61.0.1", "no", "0"] in rows
    assert ["quiet", "bridge", "172.18.0.0/16", "172.18.0.1", "yes", "0"] in rows
    shown = run("network", "inspect", "front").stdout
    assert "subnet:   10.61.0.0/24" in shown
    for args, words in [
            (("network", "create", "front"), "already exists"),
            (("network", "create", "x", "--subnet", "10.61.0.0/16"), "overlaps"),
            (("network", "create", "x", "--subnet", "10.0.0.0/24", "--gateway",
              "10.0.1.1"), "not a host address of 10.0.0.0/24"),
            (("network", "rm", "nowhere"), "no network named 'nowhere'")]:
        bad = run(*args, check=False)
        assert bad.returncode == 1 and words in bad.stderr and "Traceback" not in bad.stderr
    assert run("network", "rm", "front", "quiet").stdout == "front\nquiet\n"
    assert meshlet_json("--addr", server, "network", "ls", home=tmp_path) == []


def test_a_meshlet_home_that_cannot_be_used_is_a_one_line_error(tmp_path: Path) -> None:
    not_a_dir = tmp_path / "file"
    not_a_dir.write_text("")
    out = subprocess.run([sys.executable, "-m", "meshlet", "up", "--detach", "--http",
                          f"127.0.0.1:{free_port()}"], capture_output=True, text=True,
                         env={**env_for(tmp_path), "MESHLET_HOME": str(not_a_dir)},
                         timeout=60, check=False)
    assert out.returncode == 1
    assert out.stderr.startswith("meshlet: error: ") and str(not_a_dir) in out.stderr
    assert "Traceback" not in out.stderr and "internal error" not in out.stderr


def test_output_option_after_the_command(server: str, tmp_path: Path) -> None:
    """As kubectl: -o and --addr may follow the command."""
    meshlet("--addr", server, "kv", "put", "app/x", "1", home=tmp_path)
    listing = meshlet("kv", "list", "app/", "-o", "json", "--addr", server, home=tmp_path)
    assert [e["key"] for e in json.loads(listing.stdout)] == ["app/x"]
    services = meshlet("services", "--addr", server, "-o", "json", home=tmp_path)
    assert json.loads(services.stdout) == []
    status = meshlet("raft", "status", "--output=json", "--addr", server, home=tmp_path)
    assert json.loads(status.stdout)["role"] == "leader"


def test_join_without_a_scheme_is_refused(tmp_path: Path) -> None:
    port = free_port()
    refused = meshlet("server", "--data-dir", str(tmp_path / "d"), "--http",
                      f"127.0.0.1:{free_port()}", "--raft", f"127.0.0.1:{free_port()}",
                      "--join", f"127.0.0.1:{port}", home=tmp_path, check=False)
    assert refused.returncode == 1
    assert refused.stderr == (f"meshlet: error: --join: '127.0.0.1:{port}' is not an HTTP "
                              "URL; give a server's API address as http://HOST:PORT\n")
    assert not (tmp_path / "d").exists()


def test_a_server_with_raft_and_no_join_token_refuses_to_start(tmp_path: Path) -> None:
    env = {k: v for k, v in env_for(tmp_path).items() if k != "MESHLET_JOIN_TOKEN"}
    refused = subprocess.run(
        [sys.executable, "-m", "meshlet", "server", "--data-dir", str(tmp_path / "d"),
         "--http", f"127.0.0.1:{free_port()}", "--raft", f"127.0.0.1:{free_port()}"],
        capture_output=True, text=True, env=env, timeout=60, check=False)
    assert refused.returncode == 1
    assert refused.stderr.startswith("meshlet: error: --raft needs the cluster's join token")
    assert "meshlet keygen" in refused.stderr and "Traceback" not in refused.stderr
    assert not (tmp_path / "d").exists()


def test_keygen_prints_a_new_secret_each_time(tmp_path: Path) -> None:
    first = meshlet("keygen", home=tmp_path).stdout.strip()
    second = meshlet("keygen", home=tmp_path).stdout.strip()
    assert first != second and len(first) >= 43 and "\n" not in first


def test_join_through_a_raft_port_says_what_it_waits_for(tmp_path: Path) -> None:
    """A server given another server's Raft port logs, at the default level, that it is
    waiting, through which address, and why that address may be wrong."""
    http, raft, my_http, my_raft = free_ports(4)
    first = subprocess.Popen([sys.executable, "-m", "meshlet", "server", "--data-dir",
                              str(tmp_path / "s1"), "--http", f"127.0.0.1:{http}",
                              "--raft", f"127.0.0.1:{raft}"], env=env_for(tmp_path),
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_for(lambda: meshlet("--addr", f"http://127.0.0.1:{http}", "status", home=tmp_path,
                             check=False).returncode == 0, 30, "the first server")
    log = tmp_path / "s2.log"
    with log.open("w") as sink:
        second = subprocess.Popen(
            [sys.executable, "-m", "meshlet", "server", "--id", "s2", "--data-dir",
             str(tmp_path / "s2"), "--http", f"127.0.0.1:{my_http}", "--raft",
             f"127.0.0.1:{my_raft}", "--join", f"http://127.0.0.1:{raft}"],
            env=env_for(tmp_path), stdout=sink, stderr=sink)
    try:
        wait_for(lambda: "not its Raft port?" in log.read_text(), 30,
                 "the joining server to say why it waits")
        text = log.read_text()
        assert ("waiting to join a cluster: no --join server has added s2 yet; "
                f"http://127.0.0.1:{raft} closed the connection without an HTTP answer: "
                "is it a server's API address (--http), not its Raft port?") in text
        assert "Traceback" not in text
    finally:
        stop_processes({"first": first, "second": second})

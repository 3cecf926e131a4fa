"""Small things a new user meets: global options after the command, ``--join``
addresses, and what a server without a cluster says it waits for."""

from __future__ import annotations

import logging

import click
import pytest

from meshlet.addresses import parse_http_url
from meshlet.api.error_body import error_body
from meshlet.backoff import Backoff
from meshlet.cli.global_options import click_shapes, hoist_global_options
from meshlet.cli.main import cli
from meshlet.errors import ConfigError, NotFound
from meshlet.server.main import ServerOptions, bootstrap_wait_text
from meshlet.server.waiting import WaitReport

TOKEN = "a-join-token-of-enough-length"


@pytest.mark.parametrize(("given", "parsed"), [
    (["services", "-o", "json"], ["-o", "json", "services"]),
    (["-o", "json", "services"], ["-o", "json", "services"]),
    (["raft", "status", "--output=json", "--addr", "http://h:1"],
     ["--output=json", "--addr", "http://h:1", "raft", "status"]),
    (["kv", "get", "k", "-ojson", "-v"], ["-ojson", "-v", "kv", "get", "k"]),
    (["--addr", "http://h:1", "instances", "web", "--passing", "-o", "json"],
     ["--addr", "http://h:1", "-o", "json", "instances", "web", "--passing"]),
    (["config", "set", "web", "lb=random", "-o", "json"],
     ["-o", "json", "config", "set", "web", "lb=random"]),
    # an option's own value stays with it, even when it looks like a global option
    (["run", "--name", "-v", "-o", "json", "--", "true"],
     ["-o", "json", "run", "--name", "-v", "--", "true"]),
    (["kv", "put", "k", "--cas", "3", "-o", "json"],
     ["-o", "json", "kv", "put", "k", "--cas", "3"]),
    # a workload's command line stays as it is given, with or without --
    (["exec", "web", "-o", "json", "--", "ls", "-o", "-v"],
     ["-o", "json", "exec", "web", "--", "ls", "-o", "-v"]),
    (["exec", "web", "grep", "-v", "foo", "/etc/hosts"],
     ["exec", "web", "grep", "-v", "foo", "/etc/hosts"]),
    (["-o", "json", "exec", "web", "curl", "-o", "/tmp/x", "http://web"],
     ["-o", "json", "exec", "web", "curl", "-o", "/tmp/x", "http://web"]),
    (["run", "-d", "--name", "x", "-p", "80:80", "sh", "-c", "echo", "-v"],
     ["run", "-d", "--name", "x", "-p", "80:80", "sh", "-c", "echo", "-v"]),
    (["run", "-d", "--name", "x", "--", "sh", "-c", "echo -v"],
     ["run", "-d", "--name", "x", "--", "sh", "-c", "echo -v"]),
    # what is not a command is left for click to refuse
    (["nonsense", "-o", "json"], ["-o", "json", "nonsense"]),
])
def test_global_options_after_the_command_move_before_it(given: list[str],
                                                         parsed: list[str]) -> None:
    shapes = click_shapes(cli, click.Context(cli))
    assert hoist_global_options(given, shapes) == parsed


def test_join_takes_only_http_urls() -> None:
    assert parse_http_url("http://127.0.0.1:8500/", "--join") == "http://127.0.0.1:8500"
    assert parse_http_url("https://h:1", "--join") == "https://h:1"
    for wrong in ("127.0.0.1:8500", "raft://h:1", "http://h", "h"):
        with pytest.raises(ConfigError, match="is not"):
            parse_http_url(wrong, "--join")
    for wrong in ("http://h:8500/ui", "http://h:8500/v1/", "http://h:8500?x=1"):
        with pytest.raises(ConfigError, match="has a path"):
            parse_http_url(wrong, "--join")


def test_server_options_refuse_joining_its_own_raft_address() -> None:
    options = ServerOptions(raft=("127.0.0.1", 7001), join_token=TOKEN, join=["http://127.0.0.1:7001"])
    with pytest.raises(ConfigError, match="own Raft address"):
        options.check()
    ServerOptions(raft=("127.0.0.1", 7001), join_token=TOKEN, join=["http://127.0.0.1:8500"]).check()
    with pytest.raises(ConfigError, match="own Raft address"):
        ServerOptions(raft=("0.0.0.0", 7001), join_token=TOKEN, join=["http://localhost:7001"]).check()
    ServerOptions(raft=("0.0.0.0", 7001), join_token=TOKEN, join=["http://127.0.0.1:7002"]).check()
    with pytest.raises(ConfigError, match="not an HTTP URL"):
        ServerOptions(raft=("127.0.0.1", 7001), join_token=TOKEN, join=["127.0.0.1:8500"]).check()


def test_a_server_with_raft_needs_a_join_token() -> None:
    with pytest.raises(ConfigError, match="--raft needs the cluster's join token") as caught:
        ServerOptions(raft=("127.0.0.1", 7001)).check()
    assert caught.value.field == "join_token"
    with pytest.raises(ConfigError, match="at least 16 characters"):
        ServerOptions(raft=("127.0.0.1", 7001), join_token="short").check()
    ServerOptions(raft=("127.0.0.1", 7001), join_token=TOKEN).check()
    ServerOptions().check()  # alone, without --raft: no other server to prove itself to


def test_a_wait_is_reported_when_it_changes_or_after_a_while() -> None:
    now = [0.0]
    report = WaitReport(logging.getLogger("test"), repeat_after=30.0, clock=lambda: now[0])
    assert report.due("found 1")
    now[0] = 5.0
    assert not report.due("found 1")
    assert report.due("found 2")
    now[0] = 36.0
    assert report.due("found 2")


def test_bootstrap_wait_names_the_servers_found_and_the_silent_ones() -> None:
    found = {"s1": {"raft": "h:1", "http": "http://h:11"},
             "s2": {"raft": "h:2", "http": "http://h:12"}}
    text = bootstrap_wait_text("s1", found, 3, ["http://h:13: refused"])
    assert text == ("waiting for 3 servers to found a cluster (--bootstrap-expect 3), "
                    "found 2: s1 (this server), s2 at http://h:12; no answer from "
                    "http://h:13: refused")
    assert "more than --bootstrap-expect 1" in bootstrap_wait_text("s1", found, 1, [])


def test_backoff_doubles_up_to_its_cap_and_starts_over() -> None:
    backoff = Backoff(base=0.1, cap=0.3)
    assert [backoff.next_delay() for _ in range(4)] == [0.1, 0.2, 0.3, 0.3]
    backoff.reset()
    assert backoff.next_delay() == 0.1


def test_every_api_failure_has_one_body() -> None:
    """The routes and the fast lane answer through one function: a MeshletError with
    its own status and body, anything else a 500 that tells the client nothing more."""
    assert error_body(NotFound("key 'k' not found", "key")) == (
        404, {"error": {"code": "not_found", "message": "key 'k' not found", "field": "key"}})
    assert error_body(RuntimeError("secret detail")) == (
        500, {"error": {"code": "internal", "message": "internal server error",
                        "field": None}})

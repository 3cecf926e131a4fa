"""Small things a new user meets: global options after the command, ``--join``
addresses, and what a server without a cluster says it waits for."""

from __future__ import annotations

import logging

import pytest

from meshlet.addresses import parse_http_url
from meshlet.backoff import Backoff
from meshlet.cli.global_options import hoist_global_options
from meshlet.errors import ConfigError
from meshlet.server.main import ServerOptions, bootstrap_wait_text
from meshlet.server.waiting import WaitReport


@pytest.mark.parametrize(("given", "parsed"), [
    (["services", "-o", "json"], ["-o", "json", "services"]),
    (["-o", "json", "services"], ["-o", "json", "services"]),
    (["raft", "status", "--output=json", "--addr", "http://h:1"],
     ["--output=json", "--addr", "http://h:1", "raft", "status"]),
    (["kv", "get", "k", "-ojson", "-v"], ["-ojson", "-v", "kv", "get", "k"]),
    (["--addr", "http://h:1", "instances", "web", "--passing", "-o", "json"],
     ["--addr", "http://h:1", "-o", "json", "instances", "web", "--passing"]),
    # what follows -- is a workload's command line, and stays where it is
    (["exec", "web", "-o", "json", "--", "ls", "-o", "-v"],
     ["-o", "json", "exec", "web", "--", "ls", "-o", "-v"]),
    (["run", "-d", "--name", "x", "--", "sh", "-c", "echo -v"],
     ["run", "-d", "--name", "x", "--", "sh", "-c", "echo -v"]),
])
def test_global_options_after_the_command_move_before_it(given: list[str],
                                                         parsed: list[str]) -> None:
    assert hoist_global_options(given) == parsed


def test_join_takes_only_http_urls() -> None:
    assert parse_http_url("http://127.0.0.1:8500/", "--join") == "http://127.0.0.1:8500"
    assert parse_http_url("https://h:1", "--join") == "https://h:1"
    for wrong in ("127.0.0.1:8500", "raft://h:1", "http://h", "h"):
        with pytest.raises(ConfigError, match="--join"):
            parse_http_url(wrong, "--join")


def test_server_options_refuse_joining_its_own_raft_address() -> None:
    options = ServerOptions(raft=("127.0.0.1", 7001), join=["http://127.0.0.1:7001"])
    with pytest.raises(ConfigError, match="own Raft address"):
        options.check()
    ServerOptions(raft=("127.0.0.1", 7001), join=["http://127.0.0.1:8500"]).check()
    with pytest.raises(ConfigError, match="not an HTTP URL"):
        ServerOptions(raft=("127.0.0.1", 7001), join=["127.0.0.1:8500"]).check()


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

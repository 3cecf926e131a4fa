"""A recorded pid names the recorded process only while its start time and command line
still match: a pid reused by another process matches nothing."""

from __future__ import annotations

import os
import subprocess
import sys

from meshlet import devmode
from meshlet.process_identity import identity, matches, own_identity, parse_start_time
from tests.conftest import wait_until


def test_the_start_time_is_read_past_a_command_name_with_parentheses() -> None:
    fields = " ".join(str(n) for n in range(3, 30))
    assert parse_start_time(f"42 (a) (b c) {fields}") == 22


def test_this_process_matches_its_own_record_and_nothing_else() -> None:
    me = own_identity()
    assert me.pid == os.getpid() and "python" in me.cmdline[0]
    record = me.to_dict()
    assert matches(record, identity(os.getpid()))
    assert not matches({**record, "start_time": me.start_time + 1}, me)
    assert not matches({**record, "cmdline": ["sleep", "600"]}, me)
    assert not matches({"pid": me.pid}, me)  # no identity recorded: not ours
    assert not matches(record, None)


def test_a_process_that_is_gone_matches_its_record_no_more() -> None:
    proc = subprocess.Popen(["sleep", "600"])
    # Popen returns a moment before the kernel has set the new command line up.
    wait_until(lambda: (found := identity(proc.pid)) is not None and found.cmdline, 10,
               "sleep's command line")
    record = identity(proc.pid)
    assert record is not None and record.cmdline == ("sleep", "600")
    proc.kill()
    proc.wait()
    assert not matches(record.to_dict(), identity(proc.pid))  # gone, or another process
    assert identity(0) is None and identity(-5) is None


def test_only_a_detached_meshlet_up_is_one() -> None:
    assert devmode.is_meshlet_up([sys.executable, "-m", "meshlet", "up", "--http", "x"])
    assert not devmode.is_meshlet_up(["sleep", "600"])
    assert not devmode.is_meshlet_up([sys.executable, "-m", "meshlet", "server"])

"""An app's port comes from outside the kernel's ephemeral range, so no bind(0) or
connect() on the host can take it between the agent's choice and the app's bind."""

from __future__ import annotations

import random
import socket
from pathlib import Path

import pytest

from meshlet.agent import app_ports
from meshlet.agent.app_ports import candidates, ephemeral_range, free_app_port


def test_the_range_is_read_and_defaults_to_linuxs(tmp_path: Path) -> None:
    path = tmp_path / "ip_local_port_range"
    path.write_text("40000\t50000\n")
    assert ephemeral_range(path) == (40000, 50000)
    path.write_text("garbage")
    assert ephemeral_range(path) == (32768, 60999)
    assert ephemeral_range(tmp_path / "missing") == (32768, 60999)


def test_candidates_leave_out_the_range_and_the_well_known_ports() -> None:
    assert candidates(32768, 60999) == [range(10000, 32768), range(61000, 65536)]
    assert candidates(1024, 65535) == []


def test_the_port_is_outside_the_machines_range_and_free() -> None:
    low, high = ephemeral_range()
    for seed in range(20):
        port = free_app_port("127.0.0.1", random.Random(seed))
        assert not low <= port <= high and port >= app_ports.LOWEST, port
        with socket.socket() as s:
            s.bind(("127.0.0.1", port))  # nothing held it


def test_a_taken_port_is_passed_over(monkeypatch: pytest.MonkeyPatch) -> None:
    with socket.socket() as held:
        held.bind(("127.0.0.1", 0))
        held.listen()
        taken = held.getsockname()[1]
        monkeypatch.setattr(app_ports, "candidates",
                            lambda low, high: [range(taken, taken + 1), range(taken + 1,
                                                                              taken + 2)])
        ports = {free_app_port("127.0.0.1", random.Random(seed)) for seed in range(10)}
    assert taken not in ports


def test_no_room_outside_the_range_falls_back_to_bind_0(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    everything = tmp_path / "ip_local_port_range"
    everything.write_text("1024 65535")
    monkeypatch.setattr(app_ports, "PORT_RANGE", everything)
    assert 1024 <= free_app_port("127.0.0.1") <= 65535

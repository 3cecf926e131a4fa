"""The mesh as Prometheus file_sd targets (``observe/file_sd.py``), and the file kept
atomically, only when it changes (``observe/file_sd_writer.write_if_changed``)."""

from __future__ import annotations

import json
import os
import stat
import subprocess
from pathlib import Path
from typing import Any

import pytest

from meshlet.errors import StorageError
from meshlet.observe.file_sd import parse_address, parse_url, render, target_groups
from meshlet.observe.file_sd_writer import write_if_changed

MEMBERS = [{"id": "server-2", "http": "https://10.0.0.2:8470", "raft": "10.0.0.2:8471"},
           {"id": "server-1", "http": "http://127.0.0.1:8470", "raft": ""}]
NODES = [{"name": "host-b", "address": "10.0.0.12", "metrics": "10.0.0.12:9100"},
         {"name": "host-a", "address": "10.0.0.11", "metrics": "10.0.0.11:9100"},
         {"name": "old-agent", "address": "10.0.0.13"}]  # registered no metrics address


def instance(ident: str, service: str, node: str, metrics: Any) -> dict[str, Any]:
    return {"id": ident, "service": service, "node": node,
            "meta": {"metrics": metrics, "admin": "unix:/x"}}


INSTANCES = [instance("catalog-1", "catalog", "host-b", "http://10.0.0.12:40001"),
             instance("catalog-0", "catalog", "host-a", "http://10.0.0.11:40000/"),
             instance("frontend-0", "frontend", "host-a", "https://10.0.0.11:40002/sidecar"),
             {"id": "plain", "service": "legacy", "node": "", "meta": {}}]


def test_every_server_agent_and_sidecar_is_a_target_with_its_labels() -> None:
    groups = target_groups(MEMBERS, NODES, INSTANCES)
    assert groups == [
        {"targets": ["127.0.0.1:8470"],
         "labels": {"job": "meshlet-server", "meshlet_instance": "server-1"}},
        {"targets": ["10.0.0.2:8470"],
         "labels": {"job": "meshlet-server", "meshlet_instance": "server-2",
                    "__scheme__": "https"}},
        {"targets": ["10.0.0.11:9100"],
         "labels": {"job": "meshlet-agent", "meshlet_node": "host-a"}},
        {"targets": ["10.0.0.12:9100"],
         "labels": {"job": "meshlet-agent", "meshlet_node": "host-b"}},
        {"targets": ["10.0.0.11:40000"],
         "labels": {"job": "meshlet-sidecar", "meshlet_node": "host-a",
                    "meshlet_service": "catalog", "meshlet_instance": "catalog-0"}},
        {"targets": ["10.0.0.11:40002"],
         "labels": {"job": "meshlet-sidecar", "meshlet_node": "host-a",
                    "meshlet_service": "frontend", "meshlet_instance": "frontend-0",
                    "__scheme__": "https", "__metrics_path__": "/sidecar/metrics"}},
        {"targets": ["10.0.0.12:40001"],
         "labels": {"job": "meshlet-sidecar", "meshlet_node": "host-b",
                    "meshlet_service": "catalog", "meshlet_instance": "catalog-1"}},
    ]


def test_the_same_mesh_in_any_order_renders_the_same_bytes() -> None:
    first = render(target_groups(MEMBERS, NODES, INSTANCES))
    again = render(target_groups(MEMBERS[::-1], NODES[::-1], INSTANCES[::-1]))
    assert first == again and first.endswith(b"]\n")
    assert json.loads(first)[0]["targets"] == ["127.0.0.1:8470"]


def test_an_empty_mesh_is_an_empty_list() -> None:
    assert render(target_groups([], [], [])) == b"[]\n"


def test_a_target_listed_twice_is_kept_once() -> None:
    twice = [instance("a-0", "a", "n", "http://127.0.0.1:1000")] * 2
    assert len(target_groups([], [], twice)) == 1


@pytest.mark.parametrize("url", [
    None, 42, "", "127.0.0.1:9000", "ftp://127.0.0.1:9000", "http://127.0.0.1",
    "http://127.0.0.1:0", "http://127.0.0.1:65536", "http://127.0.0.1:9000?x=1",
    "http://127.0.0.1:9000#f", "http://user@127.0.0.1:9000", "http://a b:9000",
    "http://127.0.0.1:9000/a b", 'http://127.0.0.1:9000/"', "http://h:9000\n",
    "unix:/run/sidecar.sock",
])
def test_a_metrics_url_that_is_not_plain_http_is_left_out(url: object) -> None:
    assert parse_url(url) is None
    assert target_groups([], [], [instance("a-0", "a", "n", url)]) == []


def test_metrics_urls_and_addresses_that_are_kept() -> None:
    assert parse_url("http://127.0.0.1:9000") == ("http", "127.0.0.1:9000", "/metrics")
    assert parse_url("HTTPS://h:9000") is None  # the agent writes lower case
    assert parse_url("https://[::1]:09000/p/") == ("https", "[::1]:9000", "/p/metrics")
    assert parse_address("10.0.0.1:9100") == "10.0.0.1:9100"
    for bad in (None, "", "10.0.0.1", "10.0.0.1:0", ":9100", "10.0.0.1:9100/x", 9100):
        assert parse_address(bad) is None
    assert target_groups([], [{"name": "n", "metrics": "bad"}], []) == []


def test_the_file_is_written_only_when_it_changes(tmp_path: Path) -> None:
    path = tmp_path / "targets.json"
    assert write_if_changed(path, b"[]\n") is True
    assert path.read_bytes() == b"[]\n"
    assert stat.S_IMODE(path.stat().st_mode) == 0o644  # Prometheus runs as another user
    inode = path.stat().st_ino
    assert write_if_changed(path, b"[]\n") is False
    assert path.stat().st_ino == inode  # untouched
    assert write_if_changed(path, b"[1]\n") is True
    assert path.read_bytes() == b"[1]\n"
    assert path.stat().st_ino != inode  # a new file renamed over the old: never half one
    assert sorted(p.name for p in tmp_path.iterdir()) == ["targets.json"]  # no temp left


def test_a_file_that_cannot_be_written_is_one_error_and_leaves_nothing(tmp_path: Path) -> None:
    """As root, on a full filesystem (a 4 KiB tmpfs), where the write fails after the
    temporary file exists; as another user, in a directory it may not write to."""
    locked = tmp_path / "locked"
    locked.mkdir()
    content = b"[%b]\n" % b",".join([b"{}"] * 32768)  # 64 KiB: more than the tmpfs holds
    if os.geteuid() == 0:
        subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4k,mode=0700", "tmpfs",
                        str(locked)], check=True)
        expected, undo = "No space", ["umount", str(locked)]
    else:
        locked.chmod(0o500)
        expected, undo = "Permission", ["chmod", "0700", str(locked)]
    try:
        with pytest.raises(StorageError, match=rf"cannot write .*targets\.json: {expected}"):
            write_if_changed(locked / "targets.json", content)
        assert list(locked.iterdir()) == []
    finally:
        subprocess.run(undo, check=True)


def test_a_directory_in_the_files_place_is_one_error(tmp_path: Path) -> None:
    (tmp_path / "targets.json").mkdir()
    with pytest.raises(StorageError, match="cannot read"):
        write_if_changed(tmp_path / "targets.json", b"[]\n")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["targets.json"]

"""Containers in the state machine: creation assigns addresses, deletion releases
them, ports and networks are checked, and bad requests change nothing."""

from __future__ import annotations

import pytest

from meshlet.errors import ConfigError, Conflict, MeshletError, NotFound
from meshlet.state.commands import (
    Command,
    ContainerConnect,
    ContainerCreate,
    ContainerDelete,
    ContainerDesire,
    ContainerReport,
    NetworkCreate,
    NetworkDelete,
)
from tests.unit.test_networks import Machine, assert_refused, contents


def lab() -> Machine:
    m = Machine()
    m.apply(NetworkCreate("front", subnet="10.40.0.0/24"))
    m.apply(NetworkCreate("back", subnet="10.41.0.0/24"))
    m.apply(NetworkCreate("tiny", subnet="10.42.0.0/30"))  # room for one workload
    m.apply(ContainerCreate("web", "local", ("python3", "-m", "http.server"),
                            networks=("front",), ports=("8080:8000",)))
    return m


def test_create_assigns_addresses_and_delete_releases_them() -> None:
    m = lab()
    web = m.sm.containers.get("web")
    assert web.addresses == {"front": "10.40.0.2"} and web.desired == "running"
    assert web.status == "created"
    both = m.apply(ContainerCreate("api", "local", ("sleep", "100"),
                                   networks=("front", "back")))
    assert both["addresses"] == {"front": "10.40.0.3", "back": "10.41.0.2"}
    m.apply(ContainerConnect("web", "back"))
    assert m.sm.containers.get("web").addresses["back"] == "10.41.0.3"
    m.apply(ContainerConnect("web", "back", connect=False))
    assert "back" not in m.sm.containers.get("web").addresses
    m.apply(ContainerReport("web", "running", pid=42, namespace="ml-x-web"))
    m.apply(ContainerDesire("web", "stopped"))
    assert m.sm.containers.get("web").to_dict()["pid"] == 42
    for name in ("web", "api"):
        m.apply(ContainerDelete(name))
    for network in ("front", "back"):
        assert m.sm.networks.networks[network].addresses == {}
        m.apply(NetworkDelete(network))


@pytest.mark.parametrize(("command", "error", "field", "words"), [
    (ContainerCreate("web", "local", ("x",)), Conflict, "name", "already exists"),
    (ContainerCreate("-bad", "local", ("x",)), ConfigError, "name", "not a valid"),
    (ContainerCreate("c\n", "local", ("x",)), ConfigError, "name", "not a valid"),
    (ContainerCreate("c", "local", ("x",), env={"X\n": "y"}), ConfigError, "env",
     "names are"),
    (ContainerCreate("c", "local", ()), ConfigError, "command", "give the command"),
    (ContainerCreate("c", "local", ("x",), networks=("nowhere",)), NotFound, "network",
     "no network"),
    (ContainerCreate("c", "local", ("x",), networks=("host", "front")), ConfigError,
     "networks", "cannot be combined"),
    (ContainerCreate("c", "local", ("x",), ports=("80:80",)), ConfigError, "ports",
     "needs a bridge"),
    (ContainerCreate("c", "local", ("x",), networks=("front",), ports=("80",)),
     ConfigError, "ports", "not HOSTPORT:PORT"),
    (ContainerCreate("c", "local", ("x",), networks=("front",), ports=("²:80",)),
     ConfigError, "ports", "not HOSTPORT:PORT"),
    (ContainerCreate("c", "local", ("x",), networks=("front",), ports=("8080:80",)),
     Conflict, "ports", "already published by 'web'"),
    (ContainerCreate("c", "local", ("x",), networks=("front",), ports=("1:1", "1:2")),
     Conflict, "ports", "already published"),
    (ContainerCreate("c", "local", ("x",), env={"1X": "y"}), ConfigError, "env",
     "names are"),
    (ContainerDesire("web", "paused"), ConfigError, "desired", "running or stopped"),
    (ContainerDesire("ghost", "stopped"), NotFound, "name", "no container"),
    (ContainerConnect("web", "front"), Conflict, "network", "already connected"),
    (ContainerConnect("web", "back", connect=False), ConfigError, "network",
     "not connected"),
    (NetworkDelete("front"), Conflict, "name", "in use by web"),
])
def test_bad_requests_change_nothing(command: Command, error: type[MeshletError],
                                     field: str, words: str) -> None:
    assert_refused(lab(), command, error, field, words)


def test_an_exhausted_network_refuses_the_next_container_whole() -> None:
    m = lab()
    m.apply(ContainerCreate("one", "local", ("x",), networks=("tiny",)))
    before = contents(m.sm)
    with pytest.raises(Conflict, match="no free address"):
        m.apply(ContainerCreate("two", "local", ("x",), networks=("front", "tiny")))
    assert contents(m.sm) == before  # not even the front address was taken


def test_image_containers_keep_their_image_limits_and_policy() -> None:
    m = lab()
    made = m.apply(ContainerCreate(
        "box", "local", (), networks=("front",), image="busybox:1", image_id="sha256:"
        + "a" * 64, user="web", workdir="/www", restart="on-failure:3",
        memory=64 << 20, cpus=0.5, stop_timeout=2))
    assert made["image"] == "busybox:1" and made["command"] == []
    assert (made["restart"], made["memory"], made["cpus"], made["stop_timeout"]) == \
        ("on-failure:3", 64 << 20, 0.5, 2)
    m.apply(ContainerReport("box", "restarting", exit_code=3, restart_count=1))
    assert m.sm.containers.get("box").to_dict()["restart_count"] == 1
    m.apply(ContainerDesire("box", "stopped", stop_timeout=0))
    assert m.sm.containers.get("box").stop_timeout == 0


@pytest.mark.parametrize(("changes", "field", "words"), [
    ({"command": ()}, "command", "give the command"),
    ({"user": "web"}, "image", "need an image"),
    ({"image": "bad image"}, "image", "not an image reference"),
    ({"image": "b", "image_id": "sha256:xyz"}, "image_id", "sha256"),
    ({"image": "b", "workdir": "www"}, "workdir", "absolute"),
    ({"image": "b", "user": "a\nb"}, "user", "printable"),
    ({"restart": "sometimes"}, "restart", "on-failure"),
    ({"memory": 1024}, "memory", "6 MiB"),
    ({"cpus": float("nan")}, "cpus", "no limit"),
    ({"cpus": 2000.0}, "cpus", "no limit"),
    ({"stop_timeout": -1}, "stop_timeout", "seconds"),
])
def test_bad_image_fields_are_refused_and_change_nothing(changes: dict[str, object],
                                                         field: str, words: str) -> None:
    fields: dict[str, object] = {"name": "box", "node": "local", "command": ("sh",)}
    fields.update(changes)
    assert_refused(lab(), ContainerCreate(**fields), ConfigError, field,  # type: ignore[arg-type]
                   words)


def test_a_bad_stop_timeout_or_restart_count_is_refused() -> None:
    m = lab()
    assert_refused(m, ContainerDesire("web", "stopped", stop_timeout=99999), ConfigError,
                   "stop_timeout", "seconds")
    assert_refused(m, ContainerReport("web", "running", restart_count=-1), ConfigError,
                   "restart_count", "count")

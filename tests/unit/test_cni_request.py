"""What `meshlet-cni` refuses before touching anything, and with which of the CNI
specification's error codes (1.0.0, "Error")."""

from __future__ import annotations

import json
from typing import Any

import pytest

from meshlet.net import cni_request
from meshlet.net.cni_request import CniError, parse

CONFIG = {"cniVersion": "1.0.0", "name": "front", "type": "meshlet"}


def env(**changes: str | None) -> dict[str, str]:
    base = {"CNI_COMMAND": "ADD", "CNI_CONTAINERID": "c1", "CNI_IFNAME": "eth0",
            "CNI_NETNS": "/run/netns/box", "CNI_PATH": "/usr/lib/cni"}
    for key, value in changes.items():
        if value is None:
            base.pop(key, None)
        else:
            base[key] = value
    return base


def refused(environment: dict[str, str], config: Any = CONFIG) -> CniError:
    stdin = config if isinstance(config, bytes) else json.dumps(config).encode()
    with pytest.raises(CniError) as caught:
        parse(environment, stdin)
    return caught.value


def test_a_good_request_is_parsed() -> None:
    req = parse(env(), json.dumps({**CONFIG, "network": "back",
                                   "server": "http://127.0.0.1:8470"}).encode())
    assert (req.command, req.container, req.ifname, req.netns) == \
        ("ADD", "c1", "eth0", "/run/netns/box")
    assert req.network == "back" and req.owner == "cni-c1-eth0"
    assert req.server("http://default") == "http://127.0.0.1:8470"
    assert parse(env(), json.dumps(CONFIG).encode()).server("http://d") == "http://d"


@pytest.mark.parametrize("ifname", [
    "", "a" * 16, ".", "..", "eth/0", "eth:0", "eth 0", "eth\t0", "eth\n0", "eth\u00a00",
    "éth0",
])
def test_bad_interface_names_are_invalid_environment(ifname: str) -> None:
    error = refused(env(CNI_IFNAME=ifname))
    assert error.code == cni_request.INVALID_ENVIRONMENT
    assert error.msg in ("invalid CNI_IFNAME", "missing environment variables")


@pytest.mark.parametrize("ifname", ["eth0", "a" * 15, "net1.100", "x-y_z"])
def test_interface_names_the_kernel_takes_are_accepted(ifname: str) -> None:
    assert parse(env(CNI_IFNAME=ifname), json.dumps(CONFIG).encode()).ifname == ifname


@pytest.mark.parametrize("container", ["-c1", "c/1", "c 1", "c1;rm", "../x", "c\x1b1", "c1\n"])
def test_bad_container_ids_are_invalid_environment(container: str) -> None:
    error = refused(env(CNI_CONTAINERID=container))
    assert (error.code, error.msg) == (4, "invalid CNI_CONTAINERID")


def test_a_container_id_too_long_for_an_ipam_owner_is_refused() -> None:
    assert parse(env(CNI_CONTAINERID="a" * 64), json.dumps(CONFIG).encode())
    error = refused(env(CNI_CONTAINERID="a" * 200))
    assert error.code == 4 and "128" in error.details


@pytest.mark.parametrize("netns", ["run/netns/box", "/run/netns/b\0x", "/" + "a" * 5000])
def test_bad_netns_paths_are_invalid_environment(netns: str) -> None:
    error = refused(env(CNI_NETNS=netns))
    assert (error.code, error.msg) == (4, "invalid CNI_NETNS")


@pytest.mark.parametrize("missing", ["CNI_CONTAINERID", "CNI_IFNAME", "CNI_NETNS"])
def test_missing_variables_are_named(missing: str) -> None:
    error = refused(env(**{missing: None}))
    assert (error.code, error.details) == (4, missing)


def test_del_needs_no_namespace_but_checks_one_given() -> None:
    assert parse(env(CNI_COMMAND="DEL", CNI_NETNS=None), json.dumps(CONFIG).encode()).netns \
        == ""
    assert refused(env(CNI_COMMAND="DEL", CNI_NETNS="relative")).code == 4


@pytest.mark.parametrize("command", ["", "add", "GC", "STATUS", "ADD\n"])
def test_unknown_commands_are_invalid_environment(command: str) -> None:
    assert refused(env(CNI_COMMAND=command)).code == 4


def test_version_needs_nothing_but_a_decodable_config() -> None:
    req = parse({"CNI_COMMAND": "VERSION"}, b"")
    assert req.command == "VERSION" and req.version == cni_request.VERSION
    assert refused({"CNI_COMMAND": "VERSION"}, b"{nope").code == cni_request.DECODE_FAILURE


@pytest.mark.parametrize("stdin", [b"{", b"[1, 2]", b"\"text\"", b"\xff\xfe",
                                   b"[" * 100_000, b"{\"a\": " * 40 + b"1" + b"}" * 40])
def test_undecodable_configs_are_decode_failures(stdin: bytes) -> None:
    assert refused(env(), stdin).code == cni_request.DECODE_FAILURE


def test_the_config_is_bounded_in_size() -> None:
    big = json.dumps({**CONFIG, "pad": "x" * cni_request.MAX_CONFIG_BYTES}).encode()
    error = refused(env(), big)
    assert (error.code, error.msg) == (6, "the network configuration is too large")


def test_depth_counts_nesting_without_recursing() -> None:
    assert cni_request.depth({}) == 1
    assert cni_request.depth({"a": [1, {"b": []}]}) == 4
    deep: Any = 1
    for _ in range(10_000):
        deep = [deep]
    assert cni_request.depth(deep) == cni_request.MAX_DEPTH + 1


@pytest.mark.parametrize("version", [None, "0.4.0", "9.9.9", 1, ["1.0.0"]])
def test_other_versions_are_incompatible(version: Any) -> None:
    config = {**CONFIG, "cniVersion": version}
    assert refused(env(), config).code == cni_request.INCOMPATIBLE_VERSION


@pytest.mark.parametrize("change", [
    {"name": None}, {"name": ""}, {"name": "a/b"}, {"name": 3},
    {"network": ""}, {"network": "x y"}, {"network": ["front"]},
    {"server": "ftp://host"}, {"server": "http://"}, {"server": 8470},
    {"server": "http://host:99999"},
])
def test_bad_fields_are_invalid_network_configuration(change: dict[str, Any]) -> None:
    config = {k: v for k, v in {**CONFIG, **change}.items() if v is not None}
    assert refused(env(), config).code == cni_request.INVALID_CONFIG


def test_an_ipam_section_is_an_unsupported_field() -> None:
    config = {**CONFIG, "ipam": {"type": "host-local"}}
    error = refused(env(), config)
    assert error.code == cni_request.UNSUPPORTED_FIELD and "ipam" in error.details


@pytest.mark.parametrize("previous", [None, [], {"ips": "10.0.0.2/24"},
                                      {"ips": [{"address": 5}]}])
def test_check_needs_a_well_formed_prev_result(previous: Any) -> None:
    config = {**CONFIG, **({} if previous is None else {"prevResult": previous})}
    error = refused(env(CNI_COMMAND="CHECK"), config)
    assert (error.code, error.msg) == (7, "CHECK needs prevResult")
    good = {**CONFIG, "prevResult": {"ips": [{"address": "10.0.0.2/24"}]}}
    assert parse(env(CNI_COMMAND="CHECK"), json.dumps(good).encode()).command == "CHECK"


def test_errors_render_as_the_specification_asks() -> None:
    error = refused(env(CNI_IFNAME="a" * 16))
    assert error.result("1.0.0") == {"cniVersion": "1.0.0", "code": 4,
                                     "msg": "invalid CNI_IFNAME",
                                     "details": f"interface name {'a' * 16!r} is longer "
                                                "than 15 characters"}


def test_an_unexpected_failure_is_one_line_of_json_not_a_traceback(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """A bug (a fault no input can cause on purpose) still answers as the spec asks."""
    from meshlet.net import cni

    def broken(req: cni_request.Request) -> None:
        raise KeyError("subnet")
    monkeypatch.setattr(cni, "run", broken)
    code, out = cni.answer(env(), json.dumps(CONFIG).encode())
    assert code == 1 and out == {"cniVersion": "1.0.0", "code": cni_request.INTERNAL_ERROR,
                                 "msg": "internal error in meshlet-cni",
                                 "details": "KeyError: 'subnet'"}
    code, out = cni.answer(env(CNI_IFNAME="x" * 16), json.dumps(CONFIG).encode())
    assert code == 1 and out is not None and out["code"] == 4

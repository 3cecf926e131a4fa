"""The state machine: every command, its failures, indexes and snapshots."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from meshlet.errors import ConfigError, Conflict, NotFound
from meshlet.state import COMMANDS, StateMachine
from meshlet.state import commands as command_module
from meshlet.state.commands import (
    Command,
    ConfigDelete,
    ConfigSet,
    ContainerConnect,
    ContainerCreate,
    DeregisterInstance,
    KVDelete,
    KVPut,
    RegisterInstance,
    SetHealth,
)


def reg(id: str = "web-1", service: str = "web", **kw: object) -> RegisterInstance:
    return RegisterInstance(id=id, service=service, address="127.0.0.1",
                            port=kw.pop("port", 8080), **kw)  # type: ignore[arg-type]


class Applier:
    def __init__(self) -> None:
        self.sm = StateMachine()

    def __call__(self, command):  # type: ignore[no-untyped-def]
        return self.sm.apply(self.sm.index + 1, command)


@pytest.fixture
def apply() -> Applier:
    return Applier()


def test_register_then_list(apply: Applier) -> None:
    result = apply(reg(tags=("v1",), meta={"version": "1"}, weight=3, zone="a", node="n1"))
    assert result.ok and result.index == 1
    inst = apply.sm.instances["web-1"]
    assert (inst.service, inst.port, inst.tags, inst.meta, inst.weight, inst.zone, inst.node) \
        == ("web", 8080, ("v1",), {"version": "1"}, 3, "a", "n1")
    assert inst.status == "critical" and inst.create_index == 1
    assert apply.sm.services() == {"web": {"name": "web", "instances": 1, "passing": 0,
                                           "tags": ["v1"]}}
    assert apply.sm.catalog_index == 1 and apply.sm.service_index["web"] == 1


def test_reregister_keeps_create_index_and_moves_service(apply: Applier) -> None:
    apply(reg())
    apply(reg(service="api", port=9000))
    inst = apply.sm.instances["web-1"]
    assert (inst.service, inst.port, inst.create_index, inst.modify_index) == ("api", 9000, 1, 2)
    assert apply.sm.service_index == {"web": 2, "api": 2}


def test_health_and_passing_filter(apply: Applier) -> None:
    apply(reg("a"))
    apply(reg("b"))
    result = apply(SetHealth("a", "passing", "ok", restarts=2, pid=42))
    assert result.ok
    assert [i.id for i in apply.sm.service_instances("web", passing_only=True)] == ["a"]
    assert [i.id for i in apply.sm.service_instances("web")] == ["a", "b"]
    a = apply.sm.instances["a"]
    assert (a.status, a.output, a.restarts, a.pid) == ("passing", "ok", 2, 42)


def test_deregister(apply: Applier) -> None:
    apply(reg())
    assert apply(DeregisterInstance("web-1")).ok
    assert apply.sm.instances == {}
    assert apply.sm.service_index["web"] == 2


@pytest.mark.parametrize("command, error, field", [
    (reg(service="Bad_Name"), ConfigError, "service"),
    (reg(port=0), ConfigError, "port"),
    (reg(port=70000), ConfigError, "port"),
    (reg(id=""), ConfigError, "id"),
    (reg(weight=-1), ConfigError, "weight"),
    (reg(status="sick"), ConfigError, "status"),
    (reg(meta={"k": 1}), ConfigError, "meta"),
    (DeregisterInstance("ghost"), NotFound, "id"),
    (SetHealth("ghost", "passing"), NotFound, "id"),
    (SetHealth("web-1", "great"), ConfigError, "status"),
    (KVPut("", b"v"), ConfigError, "key"),
    (KVPut("/abs", b"v"), ConfigError, "key"),
    (KVPut("k", b"x" * (512 * 1024 + 1)), ConfigError, "value"),
    (KVPut("k", b"v", cas=7), Conflict, "cas"),
    (KVDelete("k", cas=3), Conflict, "cas"),
    (ConfigSet("web", {"lb": "fastest"}), ConfigError, "lb"),
    (ConfigSet("web", {"retries": 99}), ConfigError, "retries"),
    (ConfigSet("web", {"request_timeout": "soon"}), ConfigError, "request_timeout"),
    (ConfigSet("web", {"colour": "red"}), ConfigError, "colour"),
    (ConfigSet("web\n", {"retries": 1}), ConfigError, "service"),
    (ConfigDelete("nothing"), NotFound, "service"),
])
def test_invalid_commands_fail_and_change_nothing(apply: Applier, command: object,
                                                  error: type, field: str) -> None:
    apply(reg())
    before = apply.sm.snapshot()
    result = apply(command)
    assert not result.ok
    assert isinstance(result.error, error)
    assert result.error.field == field
    assert apply.sm.check(command) is not None  # type: ignore[arg-type]
    after = StateMachine()
    after.restore(apply.sm.snapshot())
    # Only the applied index moved: every table is as it was.
    assert after.snapshot().replace(b'"index":2', b'"index":1') == before


def test_kv_put_get_list_delete(apply: Applier) -> None:
    assert apply(KVPut("app/a", b"1")).ok
    assert apply(KVPut("app/b", b"2")).ok
    assert apply(KVPut("other", b"3")).ok
    assert [e.key for e in apply.sm.kv_list("app/")] == ["app/a", "app/b"]
    assert apply(KVPut("app/a", b"changed")).ok
    entry = apply.sm.kv["app/a"]
    assert (entry.value, entry.create_index, entry.modify_index) == (b"changed", 1, 4)
    assert apply(KVDelete("app/a")).value is True
    assert apply(KVDelete("app/a")).value is False
    assert "app/a" not in apply.sm.kv


def test_kv_cas(apply: Applier) -> None:
    assert apply(KVPut("k", b"v1", cas=0)).ok          # create only if absent
    assert not apply(KVPut("k", b"v2", cas=0)).ok      # now it exists
    index = apply.sm.kv["k"].modify_index
    assert apply(KVPut("k", b"v2", cas=index)).ok
    assert isinstance(apply(KVPut("k", b"v3", cas=index)).error, Conflict)
    assert apply.sm.kv["k"].value == b"v2"
    assert apply(KVDelete("k", cas=apply.sm.kv["k"].modify_index)).value is True


def test_config_merge_remove_replace(apply: Applier) -> None:
    assert apply(ConfigSet("web", {"lb": "round_robin", "retries": "3"})).ok
    assert apply.sm.config["web"].settings == {"lb": "round_robin", "retries": 3}
    assert apply(ConfigSet("web", {"request_timeout": "250ms"})).ok
    assert apply.sm.config["web"].settings == {"lb": "round_robin", "retries": 3,
                                               "request_timeout": 0.25}
    assert apply(ConfigSet("web", {"retries": None})).ok
    assert "retries" not in apply.sm.config["web"].settings
    assert apply(ConfigSet("web", {"retries": 1}, replace=True)).ok
    assert apply.sm.config["web"].settings == {"retries": 1}
    assert apply(ConfigDelete("web")).ok and "web" not in apply.sm.config


def test_table_indexes_move_only_on_their_changes(apply: Applier) -> None:
    apply(reg())
    apply(KVPut("k", b"v"))
    apply(ConfigSet("web", {"retries": 1}))
    assert (apply.sm.catalog_index, apply.sm.kv_index, apply.sm.config_index) == (1, 2, 3)
    apply(KVPut("k", b"v", cas=99))  # fails
    assert apply.sm.kv_index == 2 and apply.sm.index == 4


def test_apply_refuses_going_backwards() -> None:
    sm = StateMachine()
    sm.apply(5, KVPut("k", b"v"))
    with pytest.raises(AssertionError):
        sm.apply(5, KVPut("k", b"v"))


def test_every_command_round_trips_through_encoding() -> None:
    commands = [reg(tags=("a",), meta={"x": "y"}), DeregisterInstance("x"),
                SetHealth("x", "warning", "slow", 1, 7), KVPut("k", b"\x00\xff", 3),
                KVDelete("k", 2), ConfigSet("s", {"retries": 1}, True), ConfigDelete("s"),
                ContainerCreate("c", "n", ("sh", "-c", "true"), {"A": "1"}, ("net",),
                                ("8080:80",)),
                ContainerConnect("c", "net", False)]
    for command in commands:
        assert COMMANDS.decode(COMMANDS.encode(command)) == command
        assert COMMANDS.from_dict(COMMANDS.to_dict(command)) == command


def test_every_command_type_is_registered_once_with_its_code() -> None:
    """The registry is the only table: a command in the union that it lacks could be
    proposed but never applied."""
    union = set(Command.__args__)  # type: ignore[attr-defined]
    registered = {kind.cls for kind in COMMANDS}
    assert registered == union
    assert {kind.code for kind in COMMANDS} == {cls.TYPE for cls in union}
    defined = {obj for obj in vars(command_module).values()
               if isinstance(obj, type) and hasattr(obj, "TYPE")}
    assert defined == union


def test_entries_of_earlier_versions_decode_unchanged() -> None:
    """The log on disk keeps its form: base64 values, lists for tuples."""
    raw = b'{"type":"kv_put","key":"k","value":"AP8=","cas":null}'
    assert COMMANDS.decode(raw) == KVPut("k", b"\x00\xff")
    raw = b'{"type":"register","id":"a","service":"web","address":"h","port":1,"tags":["x"]}'
    assert COMMANDS.decode(raw) == RegisterInstance("a", "web", "h", 1, tags=("x",))


def test_decode_rejects_unknown_and_malformed() -> None:
    with pytest.raises(ConfigError):
        COMMANDS.from_dict({"type": "launch_missiles"})
    with pytest.raises(ConfigError):
        COMMANDS.from_dict({"type": "kv_put", "value": ""})  # no key
    with pytest.raises(ConfigError):
        COMMANDS.from_dict({"type": "kv_put", "key": "k", "value": "not base64!"})
    with pytest.raises(ConfigError):
        COMMANDS.from_dict(["kv_put"])
    with pytest.raises(ConfigError):
        COMMANDS.decode(b"\xff not json")


keys = st.text(alphabet="abc/", min_size=1, max_size=4).filter(lambda k: not k.startswith("/"))
ops = st.lists(st.one_of(
    st.builds(KVPut, keys, st.binary(max_size=8), st.one_of(st.none(), st.integers(0, 5))),
    st.builds(KVDelete, keys),
    st.builds(lambda i, p: reg(f"i{i}", port=p), st.integers(0, 3), st.integers(1, 5)),
    st.builds(lambda i, s: SetHealth(f"i{i}", s), st.integers(0, 3),
              st.sampled_from(["passing", "critical"])),
    st.builds(lambda i: DeregisterInstance(f"i{i}"), st.integers(0, 3)),
    st.builds(lambda r: ConfigSet("svc", {"retries": r}), st.integers(0, 10)),
), max_size=40)


@settings(max_examples=150, deadline=None)
@given(ops)
def test_snapshot_restore_equality_and_determinism(commands: list) -> None:  # type: ignore[type-arg]
    a, b = StateMachine(), StateMachine()
    for i, command in enumerate(commands, start=1):
        ra, rb = a.apply(i, command), b.apply(i, command)
        assert ra.ok == rb.ok and ra.value == rb.value
    assert a.snapshot() == b.snapshot()
    restored = StateMachine()
    restored.restore(a.snapshot())
    assert restored.snapshot() == a.snapshot()
    assert restored.instances == a.instances and restored.kv == a.kv
    # Restored state keeps working identically.
    nxt = len(commands) + 1
    assert restored.apply(nxt, KVPut("z", b"1")).value == a.apply(nxt, KVPut("z", b"1")).value

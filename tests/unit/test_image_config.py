"""An image's config as Docker reads it, --change as `docker import -c` takes it, and
the argv, environment and user a container gets from it."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from meshlet.errors import ConfigError
from meshlet.image.config import (
    DEFAULT_PATH,
    ImageConfig,
    apply_changes,
    command_for,
    env_for,
    resolve_user,
)
from tests.images import GROUP, PASSWD


def test_from_oci_reads_docker_configs_and_round_trips() -> None:
    data = {"Entrypoint": ["/bin/httpd"], "Cmd": ["-f"], "Env": ["PATH=/bin", "A=b=c"],
            "WorkingDir": "/www", "ExposedPorts": {"8080/tcp": {}, "53/udp": {}},
            "User": "web", "Labels": {"k": "v"}, "Volumes": {"/data": {}},
            "StopSignal": "SIGTERM"}
    config = ImageConfig.from_oci(data)
    assert config == ImageConfig(("/bin/httpd",), ("-f",), ("PATH=/bin", "A=b=c"), "/www",
                                 ("8080/tcp", "53/udp"), "web", {"k": "v"})
    assert ImageConfig.from_oci(config.to_oci()) == config
    assert ImageConfig.from_oci(None) == ImageConfig()
    nulls = {"Entrypoint": None, "Cmd": None, "Env": None, "ExposedPorts": None,
             "Labels": None}
    assert ImageConfig.from_oci(nulls) == ImageConfig()
    assert ImageConfig().to_oci() == {}
    assert ImageConfig.from_oci({"ExposedPorts": {"80": {}}}).exposed_ports == ("80/tcp",)


@pytest.mark.parametrize(("data", "key"), [
    ({"Cmd": "httpd -f"}, "Cmd"),
    ({"Entrypoint": [1]}, "Entrypoint"),
    ({"Env": ["NOVALUE"]}, "Env"),
    ({"Env": "A=1"}, "Env"),
    ({"WorkingDir": 3}, "WorkingDir"),
    ({"WorkingDir": "relative"}, "WorkingDir"),
    ({"ExposedPorts": ["80/tcp"]}, "ExposedPorts"),
    ({"ExposedPorts": {"80/icmp": {}}}, "ExposedPorts"),
    ({"ExposedPorts": {"0": {}}}, "ExposedPorts"),
    ({"User": 0}, "User"),
    ({"Labels": {"a": 1}}, "Labels"),
    ([], "config"),
])
def test_from_oci_is_strict(data: object, key: str) -> None:
    with pytest.raises(ConfigError) as err:
        ImageConfig.from_oci(data)
    assert err.value.field == key


def test_changes_as_docker_import_takes_them() -> None:
    config = apply_changes(ImageConfig(), [
        'CMD ["httpd", "-f", "-p", "8080"]', "ENV A=1 B=\"two words\"", "ENV LEGACY some value",
        "WORKDIR /www", "WORKDIR sub/../html", "EXPOSE 8080 53/udp 9000-9002/tcp",
        "USER web:staff", 'LABEL maintainer="me" version=1', "expose 8080"])
    assert config.cmd == ("httpd", "-f", "-p", "8080")
    assert config.env == ("A=1", "B=two words", "LEGACY=some value")
    assert config.working_dir == "/www/html"
    assert config.exposed_ports == ("8080/tcp", "53/udp", "9000/tcp", "9001/tcp", "9002/tcp")
    assert config.user == "web:staff"
    assert config.labels == {"maintainer": "me", "version": "1"}
    assert apply_changes(config, ["ENV A=2"]).env[0] == "A=2"


def test_shell_form_and_entrypoint_clearing_cmd() -> None:
    shell = apply_changes(ImageConfig(), ["CMD echo $HOME && ls"])
    assert shell.cmd == ("/bin/sh", "-c", "echo $HOME && ls")
    base = ImageConfig(cmd=("old",))
    assert apply_changes(base, ['ENTRYPOINT ["/init"]']) == ImageConfig(("/init",), None)
    kept = apply_changes(base, ['CMD ["new"]', 'ENTRYPOINT ["/init"]'])
    assert kept.entrypoint == ("/init",) and kept.cmd == ("new",)


@pytest.mark.parametrize(("change", "words"), [
    ("RUN apt-get update", "RUN is not accepted"),
    ("COPY . /app", "COPY is not accepted"),
    ("", "an empty instruction is not accepted"),
    ("CMD", "needs a value"),
    ('CMD ["httpd", ', "not a JSON array of strings"),
    ("CMD [1, 2]", "not a JSON array of strings"),
    ("ENV =x", "expected NAME=VALUE"),
    ("ENV ONLYNAME", "expected NAME=VALUE or NAME VALUE"),
    ("EXPOSE http", "expected PORT"),
    ("EXPOSE 70000", "expected PORT"),
    ("EXPOSE 80/icmp", "expected PORT"),
    ("EXPOSE ²", "expected PORT"),  # a digit to str.isdigit, not to int()
    ("EXPOSE 1-5000", "at most"),
    ("USER a b", "expected one USER"),
])
def test_bad_changes_are_refused_clearly(change: str, words: str) -> None:
    with pytest.raises(ConfigError) as err:
        apply_changes(ImageConfig(), [change])
    assert words in err.value.message


def test_command_for_follows_docker() -> None:
    both = ImageConfig(entrypoint=("/init",), cmd=("serve",))
    assert command_for(both, None, []) == ["/init", "serve"]
    assert command_for(both, None, ["debug", "-v"]) == ["/init", "debug", "-v"]
    assert command_for(both, ["/bin/sh"], []) == ["/bin/sh"]  # the override drops Cmd
    assert command_for(both, ["/bin/sh"], ["-c", "id"]) == ["/bin/sh", "-c", "id"]
    assert command_for(both, [], ["ls"]) == ["ls"]
    assert command_for(ImageConfig(cmd=("httpd", "-f")), None, []) == ["httpd", "-f"]
    assert command_for(ImageConfig(cmd=("httpd",)), None, ["ls"]) == ["ls"]
    for config, override in ((ImageConfig(), None), (both, [])):
        with pytest.raises(ConfigError) as err:
            command_for(config, override, [])
        assert err.value.field == "command"


def test_env_for_follows_docker() -> None:
    assert env_for(ImageConfig(), {}, "web-1") == [f"PATH={DEFAULT_PATH}", "HOSTNAME=web-1"]
    image = ImageConfig(env=("A=1", "PATH=/opt/bin:/bin", "B=2"))
    assert env_for(image, {"B": "user", "C": "3", "HOSTNAME": "h"}, "web-1") == [
        "PATH=/opt/bin:/bin", "HOSTNAME=h", "A=1", "B=user", "C=3"]


@pytest.mark.parametrize(("user", "expected"), [
    ("", (0, 0, ())),
    ("root", (0, 0, ())),
    ("web", (1000, 1000, (50,))),
    ("1000", (1000, 1000, (50,))),
    ("web:staff", (1000, 50, ())),
    ("web:50", (1000, 50, ())),
    ("1000:4242", (1000, 4242, ())),
    ("4242", (4242, 0, ())),
    ("4242:nogroup", (4242, 65534, ())),
    ("nobody", (65534, 65534, ())),
])
def test_resolve_user_as_runc_does(user: str, expected: tuple[int, int, tuple[int, ...]]
                                   ) -> None:
    assert resolve_user(user, PASSWD, GROUP) == expected


@pytest.mark.parametrize("user", ["ghost", "web:ghosts", "99999999999", "a b", "²",
                                  "١٢", "web:²"])
def test_resolve_user_refuses_unknown_names(user: str) -> None:
    with pytest.raises(ConfigError) as err:
        resolve_user(user, PASSWD, GROUP)
    assert err.value.field == "user"


def test_a_passwd_line_with_odd_digits_is_skipped() -> None:
    assert resolve_user("web", "web:x:²:1::/:\n" + PASSWD, GROUP)[0] == 1000


def test_resolve_user_without_files() -> None:
    assert resolve_user("", "", "") == (0, 0, ())
    assert resolve_user("123:456", "", "") == (123, 456, ())


@given(st.lists(st.text(max_size=30), max_size=4))
def test_any_changes_apply_or_are_config_errors(changes: list[str]) -> None:
    try:
        config = apply_changes(ImageConfig(), changes)
    except ConfigError:
        return
    assert ImageConfig.from_oci(config.to_oci()) == config

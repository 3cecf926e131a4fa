"""`meshlet run`'s arguments as Docker reads them: options stop at the image, whose own
arguments follow (their options included); a command after `--` instead of an image."""

from __future__ import annotations

import click
import pytest

from meshlet.cli.containers import RAW, RunCommand, made_up_name, split_image
from meshlet.errors import ConfigError


def parsed(*args: str) -> tuple[dict[str, object], tuple[str, ...]]:
    @click.command(cls=RunCommand, context_settings={"allow_interspersed_args": False})
    @click.option("--name")
    @click.option("-d", is_flag=True)
    @click.argument("command", nargs=-1)
    def run(name: str | None, d: bool, command: tuple[str, ...]) -> None:
        raise AssertionError("not called")
    ctx = run.make_context("run", list(args))
    return {"name": ctx.params["name"], "d": ctx.params["d"]}, ctx.params["command"]


def test_an_image_and_its_arguments_with_their_own_options() -> None:
    options, words = parsed("-d", "--name", "web", "busybox", "sh", "-c", "echo -d")
    assert options == {"name": "web", "d": True}
    assert split_image(words) == ("busybox", ["sh", "-c", "echo -d"])


def test_a_command_after_double_dash_has_no_image() -> None:
    options, words = parsed("--name", "old", "--", "python3", "-m", "http.server")
    assert options["name"] == "old" and words[0] == RAW
    assert split_image(words) == ("", ["python3", "-m", "http.server"])


def test_an_image_whose_arguments_hold_a_double_dash_keeps_it() -> None:
    _, words = parsed("--name", "x", "busybox", "--", "echo", "hi")
    assert split_image(words) == ("busybox", ["--", "echo", "hi"])


def test_nothing_to_run_is_a_clear_error() -> None:
    _, words = parsed("--name", "x")
    with pytest.raises(ConfigError, match="give an image"):
        split_image(words)


def test_made_up_names_are_valid_container_names() -> None:
    from meshlet.state.containers import CONTAINER_NAME
    for source in ("busybox", "registry.local/team/web:1.2", "/usr/bin/python3", "--x"):
        assert CONTAINER_NAME.match(made_up_name(source)), source

"""Global options after the command, as kubectl takes them: ``meshlet services -o json``
is ``meshlet -o json services``.

Click reads a group's options only before its command, so the group moves them to the
front before parsing. What belongs to the command stays: the values of its own options,
and a workload's command line (``run``'s and ``exec``'s COMMAND, and anything after
``--``), where ``grep -v`` or ``curl -o FILE`` mean what they say.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import click

WITH_VALUE = ("--addr", "--token", "--output", "-o", "--ca-file")
FLAGS = ("--verbose", "-v")
PASSTHROUGH = "command"  # a variadic argument of this name is a workload's command line


@dataclass(frozen=True)
class CommandShape:
    """What the hoisting needs to know of one (sub)command."""

    is_group: bool = False
    value_options: frozenset[str] = frozenset()  # its own options that take a value
    own_options: frozenset[str] = frozenset()    # every name of its own options
    passthrough: int | None = None  # positional index where a command line begins


Shapes = Callable[[Sequence[str]], CommandShape | None]


def global_option_length(args: Sequence[str], i: int) -> int:
    """How many words at ``args[i]`` form a global option (0: none)."""
    word = args[i]
    if word in FLAGS:
        return 1
    if word in WITH_VALUE:
        return 2 if i + 1 < len(args) else 1
    if word.startswith(("--addr=", "--token=", "--output=", "--ca-file=")) or (
            word.startswith("-o") and len(word) > 2 and not word.startswith("--")):
        return 1
    return 0


def hoist_global_options(args: Sequence[str], shape_of: Shapes) -> list[str]:
    """``args`` with the global options given after the command moved before it.
    ``shape_of(path)`` describes the command at ``path`` (None: no such command)."""
    front: list[str] = []
    i = 0
    while i < len(args) and args[i].startswith("-") and args[i] != "--":
        n = global_option_length(args, i) or 1
        front.extend(args[i:i + n])
        i += n
    rest: list[str] = []
    path: list[str] = []
    shape: CommandShape | None = CommandShape(is_group=True)
    positionals = 0
    while i < len(args):
        word = args[i]
        if word == "--":
            rest.extend(args[i:])
            break
        own = shape.own_options if shape is not None else frozenset()
        n = global_option_length(args, i) if word.split("=", 1)[0] not in own else 0
        if n:
            front.extend(args[i:i + n])
            i += n
            continue
        if word.startswith("-") and len(word) > 1:
            takes = shape is not None and word in shape.value_options
            rest.extend(args[i:i + (2 if takes else 1)])
            i += 2 if takes else 1
            continue
        if shape is not None and shape.is_group:
            path.append(word)
            shape = shape_of(path)
        else:
            if shape is not None and shape.passthrough == positionals:
                rest.extend(args[i:])
                break
            positionals += 1
        rest.append(word)
        i += 1
    return front + rest


def click_shapes(root: click.Group, ctx: click.Context) -> Shapes:
    """``shape_of`` read from click's own description of the commands."""
    def shape_of(path: Sequence[str]) -> CommandShape | None:
        command: click.Command | None = root
        for name in path:
            if not isinstance(command, click.Group):
                return None
            command = command.get_command(ctx, name)
        if command is None:
            return None
        if isinstance(command, click.Group):
            return CommandShape(is_group=True)
        values: set[str] = set()
        names: set[str] = set()
        passthrough = None
        position = 0
        for param in command.params:
            if isinstance(param, click.Option):
                names.update(param.opts + param.secondary_opts)
                if not param.is_flag and not param.count:
                    values.update(param.opts)
            elif isinstance(param, click.Argument):
                if param.name == PASSTHROUGH and param.nargs == -1:
                    passthrough = position
                position += 1
        return CommandShape(False, frozenset(values), frozenset(names), passthrough)
    return shape_of


class GlobalOptionsGroup(click.Group):
    """A group whose own options may also follow its command, and whose commands in
    ``lazy_commands`` (name: ``"module:attribute"``) are imported when first asked for."""

    def __init__(self, *args: Any, lazy_commands: Mapping[str, str] | None = None,
                 **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.lazy_commands = dict(lazy_commands or {})

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*super().list_commands(ctx), *self.lazy_commands})

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        where = self.lazy_commands.get(cmd_name)
        if where is not None and cmd_name not in self.commands:
            module, attribute = where.split(":")
            self.add_command(getattr(importlib.import_module(module), attribute), cmd_name)
        return super().get_command(ctx, cmd_name)

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        return super().parse_args(ctx, hoist_global_options(args, click_shapes(self, ctx)))

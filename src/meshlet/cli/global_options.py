"""Global options after the command, as kubectl takes them: ``meshlet services -o json``
is ``meshlet -o json services``.

Click reads a group's options only before its command, so the group moves them to the
front before parsing. Nothing after ``--`` moves: that is a workload's command line.
"""

from __future__ import annotations

from collections.abc import Sequence

import click

WITH_VALUE = ("--addr", "--output", "-o")
FLAGS = ("--verbose", "-v")


def global_option_length(args: Sequence[str], i: int) -> int:
    """How many words at ``args[i]`` form a global option (0: none)."""
    word = args[i]
    if word in FLAGS:
        return 1
    if word in WITH_VALUE:
        return 2 if i + 1 < len(args) else 1
    if word.startswith(("--addr=", "--output=")) or (word.startswith("-o") and len(word) > 2
                                                    and not word.startswith("--")):
        return 1
    return 0


def hoist_global_options(args: Sequence[str]) -> list[str]:
    """``args`` with the global options given after the command moved before it."""
    front: list[str] = []
    i = 0
    while i < len(args) and args[i].startswith("-") and args[i] != "--":
        n = global_option_length(args, i) or 1
        front.extend(args[i:i + n])
        i += n
    rest: list[str] = []
    while i < len(args):
        if args[i] == "--":
            rest.extend(args[i:])
            break
        n = global_option_length(args, i)
        if n:
            front.extend(args[i:i + n])
            i += n
        else:
            rest.append(args[i])
            i += 1
    return front + rest


class GlobalOptionsGroup(click.Group):
    """A group whose own options may also follow its command."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        return super().parse_args(ctx, hoist_global_options(args))

"""Output: aligned tables for people, JSON for scripts.

Names, messages and values from a server are data, and may come from anyone who can
write to it: before they reach a terminal, escape sequences and control characters are
taken out (``clean``), so a service named ``"\\x1b[2J…"`` cannot clear the screen, move
the cursor, retitle the window or hide text. JSON output escapes them itself.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from typing import Any

import click

# ESC (or its one-byte C1 form) and what the terminal reads with it: a control
# sequence (CSI … final byte), a string (OSC, DCS, SOS, PM, APC … up to BEL or ST), or
# one more character.
ESCAPE_SEQUENCE = re.compile(
    r"(?:\x1b\[|\x9b)[\x20-\x3f]*[\x40-\x7e]?"
    r"|(?:\x1b[\]PX^_]|[\x90\x98\x9d\x9e\x9f])[^\x07\x1b\x9c]*(?:\x07|\x1b\\|\x9c)?"
    r"|\x1b[\x20-\x7e]?")
# C0 but tab and newline, DEL, C1, and the bidirectional overrides that reorder text.
CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f\u200e\u200f\u202a-\u202e\u2066-\u2069]")
LINE_BREAKS = re.compile(r"[\t\n\r\u2028\u2029]")


def clean(text: object, multiline: bool = False) -> str:
    """``text`` as a terminal may show it: escape sequences and control characters
    removed; tabs and newlines kept with ``multiline``, else made spaces."""
    value = ESCAPE_SEQUENCE.sub("", str(text))
    if not multiline:
        value = LINE_BREAKS.sub(" ", value)
    return CONTROL.sub("", value)


def echo(text: object = "") -> None:
    """``click.echo`` for text that holds server data (several lines allowed)."""
    click.echo(clean(text, multiline=True))


def emit_json(value: Any) -> None:
    click.echo(json.dumps(value, indent=2, sort_keys=True))


def table(rows: Sequence[Sequence[Any]], headers: Sequence[str]) -> None:
    cells = [[clean(h) for h in headers]] + [["" if c is None else clean(c) for c in r]
                                             for r in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    for row in cells:
        click.echo("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip())

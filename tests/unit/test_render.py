"""What the CLI shows of server data: no escape sequence or control character reaches
the terminal, so a hostile name cannot move the cursor or rewrite the screen."""

from __future__ import annotations

import click
import pytest
from click.testing import CliRunner

from meshlet.cli.render import clean, echo, table


@pytest.mark.parametrize(("hostile", "shown"), [
    ("web\x1b[2J\x1b[Hfake", "webfake"),                  # clear screen, cursor home
    ("a\x1b]0;owned title\x07b", "ab"),                   # OSC: window title (BEL)
    ("a\x1b]8;;http://evil\x1b\\link\x1b]8;;\x1b\\b", "alinkb"),  # OSC 8 hyperlink (ST)
    ("a\x9b31mred", "ared"),                              # C1 CSI
    ("a\x9d0;t\x9cb", "ab"),                              # C1 OSC ... C1 ST
    ("a\x1bPq#0;1\x1b\\b", "ab"),                         # DCS (sixel)
    ("a\x1b7b\x1b8c", "abc"),                             # save / restore cursor
    ("over\rwrite", "over write"),                        # carriage return
    ("bell\x07\x08\x7f", "bell"),                         # BEL, backspace, DEL
    ("a\u202eevil\u202c", "aevil"),                       # bidirectional override
    ("plain ünïcode ✓", "plain ünïcode ✓"),
    ("tail\x1b", "tail"),
])
def test_escape_sequences_and_controls_are_removed(hostile: str, shown: str) -> None:
    assert clean(hostile) == shown


def test_line_breaks_are_spaces_in_one_line_and_kept_in_many() -> None:
    assert clean("a\nb\tc") == "a b c"
    assert clean("a\nb\tc\r\n", multiline=True) == "a\nb\tc\n"


def test_tables_and_echo_show_server_data_cleaned() -> None:
    @click.command()
    def show() -> None:
        table([("\x1b[31mcatalog\x1b[0m", 2, None)], ["SERVICE", "N", "X"])
        echo("name: \x1b]0;t\x07front\nnext")

    out = CliRunner().invoke(show).output
    assert "\x1b" not in out and "\x07" not in out
    assert out.splitlines() == ["SERVICE  N  X", "catalog  2", "name: front", "next"]

"""`meshlet ui`'s URL: the token goes in the fragment, quoted, and only when there is one."""

from __future__ import annotations

from meshlet.cli.ui import ui_url


def test_the_token_rides_in_the_fragment() -> None:
    assert ui_url("http://127.0.0.1:8470", "abc") == "http://127.0.0.1:8470/ui/#token=abc"
    assert ui_url("https://s:1/", "a/b+c&d") == "https://s:1/ui/#token=a%2Fb%2Bc%26d"


def test_without_a_token_the_plain_url() -> None:
    assert ui_url("http://127.0.0.1:8470", None) == "http://127.0.0.1:8470/ui/"
    assert ui_url("http://127.0.0.1:8470", "") == "http://127.0.0.1:8470/ui/"

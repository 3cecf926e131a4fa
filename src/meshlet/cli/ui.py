"""`meshlet ui`: print (and open) the web UI of the server this CLI talks to.

With a token, the URL carries it in the fragment (``/ui/#token=T``): a browser never
sends a fragment to a server, so it lands in no access log or proxy; the page keeps
it in sessionStorage and removes it from the address bar at once.
"""

from __future__ import annotations

import webbrowser
from urllib.parse import quote

import click

from meshlet.cli.context import Context, pass_ctx


def ui_url(addr: str, token: str | None) -> str:
    """The UI's address under ``addr``, logging in with ``token`` if there is one."""
    base = addr.rstrip("/") + "/ui/"
    return f"{base}#token={quote(token, safe='')}" if token else base


def open_browser(url: str) -> bool:
    """Open ``url`` if this machine has a browser to show it (False: none)."""
    try:
        return webbrowser.open(url, new=2)
    except webbrowser.Error:
        return False


@click.command()
@click.option("--no-open", is_flag=True, help="Only print the URL; do not open a browser.")
@pass_ctx
def ui(ctx: Context, no_open: bool) -> None:
    """Print the web UI's URL (with your token) and open it in a browser."""
    url = ui_url(ctx.addr, ctx.token)
    click.echo(url)
    if not no_open and not open_browser(url):
        click.echo("meshlet ui: no browser found here; open the URL above", err=True)

"""The web UI's files at /ui/: served open and read-only, with a strict CSP, and no
path reaches anything but the packaged assets."""

from __future__ import annotations

import asyncio
from typing import Any
from urllib.parse import urlsplit

import aiohttp

from meshlet.api.ui import CSP, load_assets
from meshlet.server.main import Server


async def raw_get(url: str, target: str) -> tuple[int, bytes]:
    """GET ``target`` exactly as written (a client library would normalise ``..``)."""
    parts = urlsplit(url)
    reader, writer = await asyncio.open_connection(parts.hostname, parts.port)
    writer.write(f"GET {target} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode())
    await writer.drain()
    answer = await reader.read()
    writer.close()
    await writer.wait_closed()
    head, _, body = answer.partition(b"\r\n\r\n")
    return int(head.split()[1]), body


def test_the_package_ships_the_page_its_script_and_style() -> None:
    assets = load_assets()
    assert {"index.html", "app.js", "api.js", "graph.js", "dom.js", "style.css"} <= set(assets)
    assert assets["app.js"].content_type.startswith("text/javascript")
    # No inline script or style, nothing from another origin.
    page = assets["index.html"].body.decode()
    assert "<script>" not in page and "style=" not in page and "http" not in page


async def test_the_page_is_open_and_carries_its_security_headers(server: Server) -> None:
    async with aiohttp.ClientSession() as session:  # no token: the assets need none
        async with session.get(server.url + "/ui", allow_redirects=False) as resp:
            assert resp.status == 301 and resp.headers["Location"] == "/ui/"
        async with session.get(server.url + "/ui/") as resp:
            assert resp.status == 200
            assert resp.headers["Content-Type"].startswith("text/html")
            assert resp.headers["Content-Security-Policy"] == CSP
            assert "script-src 'self'" in CSP and "unsafe-inline" not in CSP
            assert resp.headers["X-Content-Type-Options"] == "nosniff"
            assert b'src="app.js"' in await resp.read()
        async with session.get(server.url + "/ui/graph.js") as resp:
            assert resp.status == 200 and resp.headers["X-Content-Type-Options"] == "nosniff"
        # The data is not open: the API still wants a token.
        async with session.get(server.url + "/v1/services") as resp:
            assert resp.status == 401


async def test_unknown_files_traversal_and_listing_get_404(server: Server) -> None:
    for target in ("/ui/nope.js", "/ui/../pyproject.toml", "/ui/..%2f__init__.py",
                   "/ui/%2e%2e/%2e%2e/etc/passwd", "/ui/__init__.py", "/ui/../",
                   "/ui//etc/passwd", "/ui/sub/", "/ui/.%2e/api/ui.py"):
        status, body = await raw_get(server.url, target)
        assert status == 404, (target, status)
        assert b"import" not in body and b"root:" not in body, target


async def test_no_write_method_is_served(server: Server) -> None:
    async with aiohttp.ClientSession() as session:
        for method in ("PUT", "POST", "DELETE"):
            async with session.request(method, server.url + "/ui/app.js") as resp:
                got: Any = resp.status
                assert got == 405, (method, got)

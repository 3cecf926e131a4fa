"""The web UI's static assets at ``/ui/``: read-only, open (no token), no listing.

The files of ``meshlet/ui`` are read once, at start, into a table keyed by name; a
request is answered from that table only, so no path it names (``..``, ``%2e%2e``,
an absolute path, a symlink) can reach any other file. Every data call the page makes
goes to ``/v1`` with the user's token; the assets themselves hold no data.
"""

from __future__ import annotations

from dataclasses import dataclass
from importlib import resources

from aiohttp import web

# No inline script or style, nothing from elsewhere: the page talks to this server only.
CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
       "connect-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'")
TYPES = {".html": "text/html; charset=utf-8", ".css": "text/css; charset=utf-8",
         ".js": "text/javascript; charset=utf-8", ".svg": "image/svg+xml",
         ".png": "image/png", ".ico": "image/x-icon"}
HEADERS = {"Content-Security-Policy": CSP, "X-Content-Type-Options": "nosniff",
           "Referrer-Policy": "no-referrer", "X-Frame-Options": "DENY",
           "Cache-Control": "no-cache"}


@dataclass(frozen=True)
class Asset:
    body: bytes
    content_type: str


def load_assets() -> dict[str, Asset]:
    """Every file of the package ``meshlet.ui`` with a known type, by name."""
    found: dict[str, Asset] = {}
    for entry in resources.files("meshlet.ui").iterdir():
        suffix = "." + entry.name.rpartition(".")[2]
        if entry.is_file() and suffix in TYPES and not entry.name.startswith("."):
            found[entry.name] = Asset(entry.read_bytes(), TYPES[suffix])
    return found


class UiRoutes:
    """``GET /ui`` (a redirect), ``/ui/`` (index.html) and ``/ui/{name}``."""

    def __init__(self) -> None:
        self.assets = load_assets()

    def add(self, router: web.UrlDispatcher) -> None:
        router.add_get("/ui", self.redirect)
        router.add_get("/ui/", self.index)
        router.add_get("/ui/{name}", self.asset)

    async def redirect(self, request: web.Request) -> web.Response:
        raise web.HTTPMovedPermanently("/ui/", headers=HEADERS)

    async def index(self, request: web.Request) -> web.Response:
        return self.answer("index.html")

    async def asset(self, request: web.Request) -> web.Response:
        return self.answer(request.match_info["name"])

    def answer(self, name: str) -> web.Response:
        asset = self.assets.get(name)
        if asset is None:
            return web.Response(status=404, text="not found\n", headers=HEADERS)
        return web.Response(body=asset.body, headers={
            **HEADERS, "Content-Type": asset.content_type})

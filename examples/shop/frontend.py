"""frontend: the shop's page (as JSON), built from the catalog."""

from common import INSTANCE, Upstream, serve

catalog = Upstream("catalog")


def index(_: dict[str, str]) -> tuple[int, dict[str, object]]:
    listing = catalog.get_json("/items")
    return 200, {"frontend": INSTANCE, "catalog": listing["served_by"],
                 "pricing": listing["priced_by"], "items": listing["items"]}


serve({"/health": lambda _: (200, {"ok": True}), "/": index})

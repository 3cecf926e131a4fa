"""catalog: the items on sale, priced by calling pricing through the sidecar."""

from common import INSTANCE, Upstream, serve

ITEMS = ["teapot", "kettle", "mug", "tray"]
pricing = Upstream("pricing")


def items(_: dict[str, str]) -> tuple[int, dict[str, object]]:
    prices = pricing.get_json("/prices")
    return 200, {"items": [{"name": n, "price": prices["prices"][n]} for n in ITEMS],
                 "served_by": INSTANCE, "priced_by": prices["served_by"]}


serve({"/health": lambda _: (200, {"ok": True}), "/items": items})

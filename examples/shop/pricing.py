"""pricing: the price of each item, in cents."""

from common import INSTANCE, serve

PRICES = {"teapot": 1800, "kettle": 2400, "mug": 650, "tray": 1200}

serve({
    "/health": lambda _: (200, {"ok": True}),
    "/prices": lambda _: (200, {"prices": PRICES, "served_by": INSTANCE}),
})

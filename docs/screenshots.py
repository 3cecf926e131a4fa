"""Take the web UI's screenshots (docs/ui-services.png, docs/ui-topology.png) of the shop
demo: `.venv/bin/python docs/screenshots.py` from the repository's root.

It runs `meshlet up examples/shop/meshlet.yaml` in a temporary MESHLET_HOME, sends the
frontend traffic while it runs, logs chromium in with `meshlet ui --no-open`, waits until
`/v1/signals` has measured the frontend → catalog edge, and stops the demo at the end.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.e2e.browser import chromium  # noqa: E402
from tests.e2e.helpers import Traffic, meshlet, wait_for  # noqa: E402
from tests.e2e.test_up import Up  # noqa: E402

SIZE = {"width": 1200, "height": 760}


def main() -> None:
    with tempfile.TemporaryDirectory() as home:
        up = Up(Path(home))
        try:
            wait_for(up.all_passing, 60, "every shop instance to pass its checks")
            front = up.ingress("frontend")
            url = meshlet("--addr", up.addr, "ui", "--no-open", home=up.home).stdout.strip()
            with Traffic(front), chromium() as browser:
                page = browser.new_page(viewport=SIZE)
                page.goto(url)
                page.locator("[data-testid=services]").wait_for()
                page.locator("[data-instance]").first.wait_for()
                page.screenshot(path=str(ROOT / "docs/ui-services.png"), full_page=True)
                # `top --once` answers once a window has data: then every edge has a rate.
                wait_for(lambda: any(e["rps"] for e in up.json("top", "--once")["edges"]), 90,
                         "the signals to measure an edge")
                page.goto(up.addr + "/ui/#topology")
                page.locator("svg.topology").wait_for()
                page.screenshot(path=str(ROOT / "docs/ui-topology.png"), full_page=True)
        finally:
            up.proc.terminate()
            up.proc.wait(30)
    print("wrote docs/ui-services.png and docs/ui-topology.png")


if __name__ == "__main__":
    main()

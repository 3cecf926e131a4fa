"""Take the web UI's screenshots (docs/ui-services.png, docs/ui-topology.png) of the shop
demo: `.venv/bin/python docs/screenshots.py` from the repository's root.

It runs `meshlet up examples/shop/meshlet.yaml` in a temporary MESHLET_HOME, sends the
frontend some traffic, logs chromium in with `meshlet ui --no-open` and stops the demo
at the end. Where the server has no `/v1/signals` yet (it answers 404), the topology is
drawn from a sample answer of the same shape, so the picture shows what the view draws.
"""

from __future__ import annotations

import json
import sys
import tempfile
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.e2e.browser import chromium  # noqa: E402
from tests.e2e.helpers import meshlet, wait_for  # noqa: E402
from tests.e2e.test_ui import SIGNALS  # noqa: E402
from tests.e2e.test_up import Up  # noqa: E402

SIZE = {"width": 1200, "height": 760}


def main() -> None:
    with tempfile.TemporaryDirectory() as home:
        up = Up(Path(home))
        try:
            wait_for(up.all_passing, 60, "every shop instance to pass its checks")
            front = up.ingress("frontend")
            for _ in range(20):
                urllib.request.urlopen(f"http://{front}/", timeout=5).read()
            url = meshlet("--addr", up.addr, "ui", "--no-open", home=up.home).stdout.strip()
            with chromium() as browser:
                page = browser.new_page(viewport=SIZE)

                def signals(route: object) -> None:
                    answer = route.fetch()  # type: ignore[attr-defined]
                    if answer.status == 404:
                        route.fulfill(status=200, content_type="application/json",  # type: ignore[attr-defined]
                                      body=json.dumps(SIGNALS))
                    else:
                        route.fulfill(response=answer)  # type: ignore[attr-defined]

                page.route("**/v1/signals", signals)
                page.goto(url)
                page.locator("[data-testid=services]").wait_for()
                page.locator("[data-instance]").first.wait_for()
                page.screenshot(path=str(ROOT / "docs/ui-services.png"), full_page=True)
                page.goto(up.addr + "/ui/#topology")
                page.locator("svg.topology").wait_for()
                page.screenshot(path=str(ROOT / "docs/ui-topology.png"), full_page=True)
        finally:
            up.proc.terminate()
            up.proc.wait(30)
    print("wrote docs/ui-services.png and docs/ui-topology.png")


if __name__ == "__main__":
    main()

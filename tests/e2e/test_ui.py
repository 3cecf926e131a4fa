"""The web UI in headless chromium against the shop demo (`meshlet up`), as a user
would: log in, see the services, watch an instance fail, see the topology."""

from __future__ import annotations

import json
import os
import re
import signal
from collections.abc import Iterator
from typing import Any

import pytest

from tests.e2e.browser import chromium
from tests.e2e.helpers import Traffic, meshlet
from tests.e2e.test_up import Up, running_shop

pytestmark = pytest.mark.e2e

SIGNALS = {"time": 1733250000.0, "window": 10.0,
           "services": [{"service": "frontend", "instances": 1, "scraped": 1, "rps": 5.0,
                         "error_rate": 0.0, "p50": 0.001, "p99": 0.004},
                        {"service": "catalog", "instances": 3, "scraped": 3, "rps": 12.5,
                         "error_rate": 0.01, "p50": 0.002, "p99": 0.020}],
           "edges": [{"source": "frontend", "destination": "catalog", "rps": 12.5,
                      "error_rate": 0.0, "p99": 0.021},
                     {"source": "catalog", "destination": "pricing", "rps": 12.5,
                      "error_rate": 0.04, "p99": None}],
           "unreachable": ["catalog-3"]}


@pytest.fixture(scope="module")
def up(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Up]:
    with running_shop(tmp_path_factory.mktemp("ui")) as running:
        yield running


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    with chromium() as b:
        yield b


def ui_url(up: Up) -> str:
    return meshlet("--addr", up.addr, "ui", "--no-open", home=up.home).stdout.strip()


def test_login_services_and_a_failing_instance(up: Up, browser: Any) -> None:
    from playwright.sync_api import expect

    page = browser.new_page()
    page.goto(up.addr + "/ui/")
    # ACLs are on: no token, no data, a login form.
    expect(page.locator("#login")).to_be_visible()
    page.fill("#token", "not-a-token")
    page.click("#login-form button")
    expect(page.locator("#login-error")).to_have_text(re.compile("refused"))
    # `meshlet ui` logs the browser in through the fragment, which the page drops.
    url = ui_url(up)
    assert url.startswith(up.addr + "/ui/#token=")
    page.goto(url)
    services = page.locator("[data-testid=services]")
    for name in ("frontend", "catalog", "pricing"):
        expect(services).to_contain_text(name)
    assert page.evaluate("window.location.hash") == ""
    assert "token" not in page.url
    expect(page.locator("#logout")).to_be_visible()
    # Kill one catalog app: the live view shows it critical without a reload.
    victim = up.json("instances", "catalog")[0]
    os.kill(victim["pid"], signal.SIGKILL)
    expect(page.locator(f"[data-instance='{victim['id']}']")).to_have_text(
        "critical", timeout=30_000)
    # Log out: the token is gone and the form is back.
    page.click("#logout")
    expect(page.locator("#login")).to_be_visible()
    assert page.evaluate("sessionStorage.length") == 0
    page.close()


def test_topology_from_live_signals(up: Up, browser: Any) -> None:
    from playwright.sync_api import expect

    page = browser.new_page()
    page.goto(ui_url(up))
    page.goto(up.addr + "/ui/#topology")
    expect(page.locator("g.node[data-service=catalog]")).to_be_visible()
    # Real traffic through the frontend: the server's /v1/signals measures the
    # frontend -> catalog edge and the page draws it with a non-zero rate.
    edge = page.locator("g.edge[data-source=frontend][data-destination=catalog]")
    with Traffic(up.ingress("frontend")) as traffic:
        expect(edge).to_contain_text(re.compile(r"[1-9][0-9.]* rps"), timeout=90_000)
    assert traffic.ok > 0
    page.close()


def test_topology_rendering_and_without_signals(up: Up, browser: Any) -> None:
    """Formats and states the live mesh cannot be made to show on demand: a server
    without /v1/signals, an edge with errors, an unreachable sidecar."""
    from playwright.sync_api import expect

    page = browser.new_page()
    page.goto(ui_url(up))
    page.route("**/v1/signals", lambda route: route.fulfill(status=404, body="not found"))
    page.goto(up.addr + "/ui/#topology")
    expect(page.locator("#no-traffic")).to_have_text("no traffic data")
    page.unroute("**/v1/signals")
    page.route("**/v1/signals", lambda route: route.fulfill(
        status=200, content_type="application/json", body=json.dumps(SIGNALS)))
    page.reload()
    edge = page.locator("g.edge[data-source=frontend][data-destination=catalog]")
    expect(edge).to_contain_text("12.5 rps · 0% err · p99 21 ms")
    expect(page.locator("g.edge.errors[data-source=catalog]")).to_contain_text("4% err")
    expect(page.locator("g.node[data-service=pricing]")).to_be_visible()
    expect(page.locator("#topology")).to_contain_text("unreachable: catalog-3")
    page.close()

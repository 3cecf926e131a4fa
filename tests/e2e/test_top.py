"""`meshlet top` on the shop with traffic: frontend→catalog shows a request rate."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.helpers import Traffic, meshlet, wait_for
from tests.e2e.test_up import Up, running_shop

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def shop(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Up]:
    with running_shop(tmp_path_factory.mktemp("top")) as running:
        yield running


def rate_of(line: str) -> float:
    return float(line.split()[2])


def test_top_once_shows_frontend_to_catalog(shop: Up) -> None:
    with Traffic(shop.ingress("frontend")) as traffic:
        wait_for(lambda: traffic.ok >= 20, 30, "traffic through the frontend")

        def edge_line() -> str | None:
            out = meshlet("--addr", shop.addr, "top", "--once", home=shop.home).stdout
            line = next((row for row in out.splitlines()
                         if row.split()[:2] == ["frontend", "catalog"]), None)
            return line if line is not None and line.split()[2] != "-" \
                and rate_of(line) > 0 else None
        line = wait_for(edge_line, 60, "top to show frontend→catalog with a rate")
        body = json.loads(meshlet("--addr", shop.addr, "top", "-o", "json",
                                  home=shop.home).stdout)
    assert rate_of(line) > 0
    services = {s["service"]: s for s in body["services"]}
    assert services["catalog"]["instances"] == 3
    assert {(e["source"], e["destination"]) for e in body["edges"]} >= {
        ("frontend", "catalog"), ("catalog", "pricing")}


def test_top_error_is_one_line(tmp_path: Path) -> None:
    bad = meshlet("--addr", "http://127.0.0.1:9", "top", "--once", home=tmp_path, check=False)
    assert bad.returncode == 1
    assert bad.stderr.startswith("meshlet: error: cannot reach meshlet at")
    assert len(bad.stderr.splitlines()) == 1


def test_live_top_refreshes_and_ctrl_c_ends_it_cleanly(shop: Up) -> None:
    import signal
    import subprocess
    import sys
    import threading

    from tests.e2e.helpers import env_for
    proc = subprocess.Popen([sys.executable, "-m", "meshlet", "--addr", shop.addr, "top"],
                            env=env_for(shop.home), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    out: list[str] = []
    reader = threading.Thread(target=lambda: out.extend(proc.stdout or []), daemon=True)
    reader.start()
    try:
        wait_for(lambda: proc.poll() is not None or sum("SERVICE" in line for line in out)
                 >= 2, 30, "top to draw twice")
        assert proc.poll() is None
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
    assert proc.returncode == 0, err
    assert "Traceback" not in err

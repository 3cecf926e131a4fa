"""Without root's powers, meshlet keeps working on the host's network and says
plainly that container networks need root. The test runs meshlet with every
capability dropped (setpriv), which is what being an ordinary user amounts to here;
a real other user cannot run the interpreter, which lives in root's home."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from tests.e2e.helpers import env_for, free_port

pytestmark = pytest.mark.skipif(os.geteuid() != 0,
                                reason="needs root: the test drops root's capabilities")
NO_CAPS = ["setpriv", "--bounding-set", "-all", "--inh-caps", "-all"]


def without_caps(home: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    out = subprocess.run([*NO_CAPS, sys.executable, "-m", "meshlet", *args],
                         capture_output=True, text=True, env=env_for(home), timeout=90,
                         check=False)
    if check and out.returncode != 0:
        raise AssertionError(f"meshlet {' '.join(args)} failed: {out.stderr}")
    return out


def test_host_networking_works_and_bridges_are_refused_plainly() -> None:
    home = Path(tempfile.mkdtemp(prefix="meshlet-nocaps-"))
    port = free_port()
    without_caps(home, "up", "--detach", "--http", f"127.0.0.1:{port}")
    try:
        without_caps(home, "network", "create", "front", "--subnet", "10.251.0.0/24")
        refused = without_caps(home, "run", "-d", "--name", "web", "--network", "front", "--",
                            "sleep", "60", check=False)
        assert refused.returncode == 1
        assert "needs root" in refused.stderr
        assert "only host networking is available" in refused.stderr
        assert "Traceback" not in refused.stderr
        assert without_caps(home, "run", "-d", "--name", "plain", "--", "sleep",
                         "60").stdout == "plain\n"
        listing = without_caps(home, "ps").stdout
        assert "plain" in listing and "running" in listing
    finally:
        without_caps(home, "down", check=False)
        shutil.rmtree(home, ignore_errors=True)


def test_an_up_file_service_on_a_network_is_refused_plainly(tmp_path: Path) -> None:
    (tmp_path / "f.yaml").write_text("services:\n  web:\n    command: sleep 60\n"
                                     "    network: front\n")
    refused = without_caps(tmp_path, "up", "--http", f"127.0.0.1:{free_port()}",
                           str(tmp_path / "f.yaml"), check=False)
    assert refused.returncode == 1
    assert "service 'web' on network 'front' needs root" in refused.stderr
    assert "Traceback" not in refused.stderr

"""Debian's podman through `meshlet-cni`, as a user sets it up (needs root, podman, runc
and busybox-static): a containers.conf and a storage.conf of the test's own (CNI
backend, runc, no default ulimits), a conflist naming the `meshlet` plugin, an image
made by `podman import` of a busybox rootfs. The container's address comes from
meshlet's IPAM; it serves the host and a meshlet container on the same network, and
reaches that one; it keeps its bridge while the meshlet container goes. Then `podman
rm`, `meshlet network rm` and `down` leave no link, namespace, mount, process or file
behind; and `down` while podman's container still runs (its DEL comes too late) leaves
no link either.

Nothing global is touched but what libcni, containers/image and runc insist on
(/var/lib/cni, /var/lib/containers/cache, /run/runc): removed again if this test made
them."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import tempfile
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from meshlet.net import bridge
from tests.e2e.helpers import meshlet, up_token, wait_for
from tests.images import busybox_rootfs, have_busybox
from tests.netns.helpers import clean_daemon, leftovers
from tests.netns.test_cni import PLUGIN

PODMAN = shutil.which("podman")
pytestmark = [
    pytest.mark.skipif(os.geteuid() != 0,
                       reason="needs root: podman runs rootful containers on meshlet's "
                              "bridge"),
    pytest.mark.skipif(PODMAN is None or shutil.which("runc") is None or not have_busybox(),
                       reason="needs podman, runc and busybox-static: apt-get install "
                              "podman runc busybox-static (.ci/run does)"),
]
NETWORK = "podnet"
IMAGE = "localhost/meshlet-busybox:test"
GLOBAL = [Path("/var/lib/cni"), Path("/var/lib/containers")]  # libcni's, c/image's cache
RUNC_STATE = Path("/run/runc")  # runc's default --root: podman's cleanup process uses it


class Podman:
    """podman with storage, configuration, state and runc's state all under ``root``."""

    def __init__(self, root: Path, driver: str = "vfs") -> None:
        self.root = root
        self.driver = driver
        (root / "net.d").mkdir(parents=True)
        (root / "plugins").mkdir()
        (root / "plugins" / "meshlet").symlink_to(PLUGIN)  # CNI finds a plugin by type
        (root / "containers.conf").write_text(
            "[containers]\n"
            "default_ulimits = []\n"  # rlimits cannot always be raised (a VM, a container)
            "[network]\n"
            'network_backend = "cni"\n'
            f'cni_plugin_dirs = ["{root}/plugins", "/usr/lib/cni"]\n'
            f'network_config_dir = "{root}/net.d"\n'
            "[engine]\n"
            'runtime = "runc"\n'
            'cgroup_manager = "cgroupfs"\n'
            'events_logger = "none"\n'
            f'tmp_dir = "{root}/tmp"\n'
            f'static_dir = "{root}/static"\n'
            f'volume_path = "{root}/volumes"\n')
        (root / "storage.conf").write_text(
            f'[storage]\ndriver = "{driver}"\ngraphroot = "{root}/storage"\n'
            f'runroot = "{root}/run"\n')
        self.env = {**os.environ, "CONTAINERS_CONF": str(root / "containers.conf"),
                    "CONTAINERS_STORAGE_CONF": str(root / "storage.conf")}

    def __repr__(self) -> str:
        return f"<Podman {self.root}>"

    def __call__(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        assert PODMAN is not None
        out = subprocess.run(
            [PODMAN, "--root", str(self.root / "storage"), "--runroot",
             str(self.root / "run"), "--storage-driver", self.driver, "--cni-config-dir",
             str(self.root / "net.d"), *args], capture_output=True, text=True,
            env=self.env, timeout=120, check=False)
        if check and out.returncode != 0:
            raise AssertionError(f"podman {' '.join(args)} failed: {out.stderr}")
        return out

    def conflist(self, home: Path) -> None:
        """The network's CNI configuration, as a user writes it (0600: it holds a
        token that writes the network)."""
        api = json.loads((home / "up.json").read_text())["api"]
        path = self.root / "net.d" / f"{NETWORK}.conflist"
        path.write_text(json.dumps({"cniVersion": "1.0.0", "name": NETWORK, "plugins": [
            {"type": "meshlet", "server": api, "token": up_token(home)}]}))
        path.chmod(0o600)

    def processes(self) -> list[str]:
        """podman's, conmon's and runc's processes still working on this root."""
        found = []
        for proc in Path("/proc").iterdir():
            try:
                cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode()
            except OSError:
                continue
            if str(self.root) in cmdline:
                found.append(f"{proc.name}: {cmdline[:120]}")
        return found

    def mounts(self) -> list[str]:
        return [line for line in Path("/proc/self/mountinfo").read_text().splitlines()
                if str(self.root) in line]


@pytest.fixture
def podman() -> Iterator[Podman]:
    made = [p for p in GLOBAL if not p.exists()]
    made_runc = not RUNC_STATE.exists()
    short = Path(tempfile.mkdtemp(prefix="mlpod-"))  # podman takes a runroot of 50 at most
    pod = Podman(short / "p")
    try:
        yield pod
    finally:
        pod("rm", "--all", "--force", "--time", "0", check=False)
        pod("rmi", "--all", "--force", check=False)
        wait_for(lambda: pod.processes() == [], 30, "podman's processes to end")
        for path in made:
            shutil.rmtree(path, ignore_errors=True)
        if made_runc:
            with contextlib.suppress(OSError):  # only if empty: others may use it now
                RUNC_STATE.rmdir()
        for result in Path("/var/lib/cni/results").glob(f"{NETWORK}-*"):
            result.unlink()  # a DEL that failed (meshlet was down) leaves libcni's cache
        assert pod.mounts() == []  # or rmtree would descend into them
        shutil.rmtree(short)


def prepared(podman: Podman, home: Path, tmp_path: Path) -> None:
    """The meshlet network, its conflist for podman, and the image in podman's store."""
    meshlet("network", "create", NETWORK, "--subnet", "10.233.0.0/24", home=home)
    podman.conflist(home)
    podman("import", str(busybox_rootfs(tmp_path / "busybox.tar")), IMAGE)


def started(podman: Podman, home: Path, name: str) -> str:
    """Run busybox's httpd in a podman container on the network; its address."""
    podman("run", "-d", "--name", name, "--network", NETWORK, IMAGE,
           "httpd", "-f", "-p", "8080", "-h", "/www")
    inspect = json.loads(podman("inspect", name).stdout)[0]
    return str(inspect["NetworkSettings"]["Networks"][NETWORK]["IPAddress"])


def fetch(url: str) -> str:
    try:
        with urllib.request.urlopen(url, timeout=5) as resp:
            return str(resp.read().decode())
    except OSError:
        return ""


def leases(home: Path) -> dict[str, Any]:
    net = json.loads(meshlet("-o", "json", "network", "inspect", NETWORK, home=home).stdout)
    return dict(net["addresses"])


def test_podman_through_meshlet_cni_and_nothing_left(podman: Podman, tmp_path: Path) -> None:
    home = tmp_path / "home"
    home.mkdir()
    with clean_daemon(home):
        prepared(podman, home, tmp_path)
        address = started(podman, home, "web")
        container = podman("inspect", "--format", "{{.Id}}", "web").stdout.strip()
        assert leases(home) == {f"cni-{container}-eth0": address}  # meshlet's IPAM
        assert address == "10.233.0.2"
        wait_for(lambda: fetch(f"http://{address}:8080/") == "hello from busybox\n", 20,
                 "the host to reach podman's container")

        # A meshlet container on the same network and podman's reach each other.
        meshlet("run", "-d", "--name", "x", "--network", NETWORK, "--", "python3", "-m",
                "http.server", "8000", home=home)
        x = wait_for(lambda: json.loads(meshlet("-o", "json", "ps", home=home).stdout)[0][
            "addresses"], 20, "the meshlet container's address")
        # (Debian's static busybox wget crashes; its nc does not.)
        get = f"import urllib.request as u; print(u.urlopen('http://{address}:8080/', " \
              "timeout=5).read().decode())"
        wait_for(lambda: "hello from busybox" in meshlet(
            "exec", "x", "--", "python3", "-c", get, home=home, check=False).stdout, 20,
            "the meshlet container to reach podman's")
        wait_for(lambda: "HTTP/1.0 200" in podman(
            "exec", "web", "sh", "-c", f"printf 'GET / HTTP/1.0\\r\\n\\r\\n' | "
            f"nc -w 5 {x[NETWORK]} 8000", check=False).stdout, 20,
            "podman's container to reach the meshlet container")
        meshlet("rm", "-f", "x", home=home)
        assert fetch(f"http://{address}:8080/") == "hello from busybox\n"  # bridge kept

        podman("rm", "--force", "--time", "0", "web")
        assert leases(home) == {}  # podman's DEL released it
        meshlet("network", "rm", NETWORK, home=home)
        wait_for(lambda: leftovers() == [], 20, "network rm to remove the bridge")
    # `down` (clean_daemon) left no link or namespace.
    podman("rmi", IMAGE)
    wait_for(lambda: podman.processes() == [], 30, "podman's processes to end")
    assert podman.mounts() == []
    assert not any(p.name == container for p in RUNC_STATE.glob("*"))  # runc's state
    assert not list(Path("/var/lib/cni/results").glob(f"{NETWORK}-*"))


def test_down_while_podmans_container_runs_leaves_no_link(podman: Podman,
                                                          tmp_path: Path) -> None:
    """Its DEL comes after meshlet is gone (so it fails, and podman removes the
    container anyway): `down` must already have removed its veth and the bridge."""
    home = tmp_path / "home"
    home.mkdir()
    with clean_daemon(home):
        prepared(podman, home, tmp_path)
        address = started(podman, home, "late")
        wait_for(lambda: fetch(f"http://{address}:8080/") == "hello from busybox\n", 20,
                 "the host to reach podman's container")
        assert len(bridge.ours()) == 2  # the bridge and the container's veth
    assert leftovers() == []
    podman("rm", "--force", "--time", "0", "late")
    assert podman("ps", "--all", "--quiet").stdout == ""
    assert leftovers() == []

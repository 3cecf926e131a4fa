"""Image containers under runc, as a user runs them (needs root): the seed's two docker
commands word for word after `meshlet`, isolation (its own PID 1, filesystem, hostname
and DNS files), the image's user, a memory limit the kernel enforces, restart
policies, the grace period of `stop`, two containers sharing one image, a corrupt
layer refused, and nothing left behind."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from meshlet.runtime import rootfs
from meshlet.runtime.runc import leftover_cgroups
from tests.e2e.helpers import downed, free_port, meshlet, wait_for
from tests.images import busybox_rootfs, have_busybox
from tests.netns.helpers import clean_daemon, leftovers

pytestmark = [
    pytest.mark.skipif(os.geteuid() != 0,
                       reason="needs root: runc, mounts, cgroups and network namespaces"),
    pytest.mark.skipif(shutil.which("runc") is None or not have_busybox(),
                       reason="needs Debian's runc and busybox-static (.ci/run installs "
                              "them)"),
]
HTTPD = 'CMD ["httpd", "-f", "-p", "8080", "-h", "/www"]'


def runc_ids() -> list[str]:
    out = subprocess.run(["runc", "--root", "/run/meshlet/runc", "list", "-q"],
                         capture_output=True, text=True, check=False).stdout
    return out.split()


def machine_is_clean(home: Path) -> bool:
    return leftovers() == [] and runc_ids() == [] and leftover_cgroups("ml-") == [] \
        and rootfs.mounts_under(Path("/tmp")) == [] \
        and rootfs.mounts_under(home) == []


@pytest.fixture
def home(tmp_path: Path) -> Iterator[Path]:
    with clean_daemon(tmp_path):
        busybox_rootfs(tmp_path / "busybox.tar")
        meshlet("image", "import", str(tmp_path / "busybox.tar"), "--name", "my-image",
                "--change", HTTPD, "--change", "EXPOSE 8080", "--change", "WORKDIR /www",
                home=tmp_path)
        yield tmp_path
        for row in ps(tmp_path):
            meshlet("rm", "-f", row["name"], home=tmp_path, check=False)
    wait_for(lambda: machine_is_clean(tmp_path), 30, "down to leave nothing behind")


def ps(home: Path) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = json.loads(meshlet("-o", "json", "ps", "-a",
                                                    home=home).stdout)
    return rows


def container(home: Path, name: str) -> dict[str, Any]:
    return next(r for r in ps(home) if r["name"] == name)


def run(home: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return meshlet(*args, home=home, check=check)


def settled(home: Path, name: str, status: str = "exited") -> dict[str, Any]:
    wait_for(lambda: container(home, name)["status"] == status, 30, f"{name} {status}")
    return container(home, name)


def test_the_seeds_commands_word_for_word_and_isolation(home: Path) -> None:
    run(home, "network", "create", "my-network")
    assert run(home, "run", "-d", "--name", "my-container", "--network", "my-network",
               "my-image").stdout == "my-container\n"
    run(home, "run", "-d", "--name", "client", "--network", "my-network", "my-image",
        "sleep", "600")
    web = container(home, "my-container")
    assert web["image"] == "my-image" and web["status"] == "running"
    assert web["image_id"].startswith("sha256:")

    def fetch() -> str:  # busybox-static's wget crashes in a rootfs without libc
        return run(home, "exec", "client", "sh", "-c", "printf 'GET / HTTP/1.0\\r\\n"
                   "\\r\\n' | nc -w 3 my-container 8080", check=False).stdout
    wait_for(lambda: fetch().endswith("\n\nhello from busybox\n"), 20,
             "one container to reach the other by name")

    def inside(*argv: str) -> str:
        return run(home, "exec", "my-container", *argv).stdout
    assert inside("cat", "/proc/1/cmdline").split("\0")[:2] == ["httpd", "-f"]
    assert inside("sh", "-c", "echo $$") != "1\n"  # exec is not PID 1 ...
    assert len(inside("ps", "-o", "pid").split()) <= 4  # ... and sees only its own
    assert inside("hostname") == "my-container\n"
    assert inside("pwd") == "/www\n"  # the image's WorkingDir
    assert sorted(inside("ls", "/").split()) == ["bin", "dev", "etc", "home", "proc",
                                                 "root", "sys", "tmp", "www"]
    assert "nameserver 127.0.0.11" in inside("cat", "/etc/resolv.conf")
    assert f"{web['addresses']['my-network']}\tmy-container" in inside("cat", "/etc/hosts")
    assert "127.0.0.11" not in Path("/etc/resolv.conf").read_text()  # the host's is its own
    # seccomp: no user namespace (which needs no capability) to mount in, or to escape by.
    refused = run(home, "exec", "my-container", "unshare", "-U", "-r", "true", check=False)
    assert refused.returncode != 0 and "Operation not permitted" in refused.stderr + \
        refused.stdout
    # Its own filesystem: what it writes, the host and the other container never see.
    inside("sh", "-c", "echo mine > /tmp/only-here")
    assert run(home, "exec", "client", "cat", "/tmp/only-here", check=False).returncode != 0
    assert not Path("/tmp/only-here").exists()
    shown = run(home, "ps").stdout
    assert "my-image" in shown and "my-container" in shown

    # -P publishes what the image exposes (EXPOSE 8080) on a free host port.
    run(home, "run", "-d", "-P", "--name", "published", "--network", "my-network",
        "my-image")
    [port] = container(home, "published")["ports"]
    host_port = int(port.split(":")[-2])
    assert port.endswith(":8080")
    wait_for(lambda: fetch_loopback(host_port) == "hello from busybox\n", 20,
             "the published port to reach httpd")


def test_the_images_user_and_a_users_override(home: Path) -> None:
    run(home, "image", "import", str(home / "busybox.tar"), "--name", "as-web",
        "--change", "USER web", "--change", 'CMD ["id"]')
    run(home, "run", "--name", "who", "as-web")
    assert "uid=1000(web) gid=1000(web) groups=50(staff)" in \
        run(home, "logs", "who").stdout
    assert settled(home, "who")["exit_code"] == 0
    run(home, "run", "-d", "--name", "root-after-all", "--user", "0:0", "as-web")
    assert settled(home, "root-after-all")["exit_code"] == 0
    assert "uid=0(root) gid=0(root)" in run(home, "logs", "root-after-all").stdout


def test_a_memory_limit_kills_the_process_over_it(home: Path) -> None:
    hog = ["dd", "if=/dev/zero", "of=/dev/null", "bs=48M", "count=1"]
    run(home, "run", "-d", "--name", "unlimited", "my-image", *hog)
    assert settled(home, "unlimited")["exit_code"] == 0
    run(home, "run", "-d", "--name", "hog", "--memory", "16m", "my-image", *hog)
    assert settled(home, "hog")["exit_code"] == 137  # SIGKILL, from the OOM killer
    assert container(home, "hog")["memory"] == 16 << 20
    # --cpus is the CFS quota of the container's cgroup: half of each 100 ms period.
    run(home, "run", "-d", "--name", "half", "--cpus", "0.5", "--stop-timeout", "0",
        "my-image", "sleep", "600")
    [container_id] = [i for i in runc_ids() if i.endswith("-half")]
    cpu = Path("/sys/fs/cgroup/cpu/meshlet") / container_id
    assert (cpu / "cpu.cfs_quota_us").read_text().strip() == "50000"
    assert (cpu / "cpu.cfs_period_us").read_text().strip() == "100000"


def test_restart_policies(home: Path) -> None:
    fail = ["sh", "-c", "echo ran; exit 3"]
    run(home, "run", "-d", "--name", "once", "my-image", *fail)
    run(home, "run", "-d", "--name", "thrice", "--restart", "on-failure:2", "my-image",
        *fail)
    run(home, "run", "-d", "--name", "ok", "--restart", "on-failure", "my-image", "true")
    run(home, "run", "-d", "--name", "forever", "--restart", "always", "my-image", "sh",
        "-c", "echo ran; exit 0")
    assert (settled(home, "once")["exit_code"], container(home, "once")["restart_count"]) \
        == (3, 0)
    thrice = settled(home, "thrice")
    assert (thrice["exit_code"], thrice["restart_count"]) == (3, 2)
    assert run(home, "logs", "thrice").stdout == "ran\n" * 3
    assert settled(home, "ok")["restart_count"] == 0
    wait_for(lambda: container(home, "forever")["restart_count"] >= 3, 30,
             "always to start it again after a clean exit")
    run(home, "stop", "forever")
    stopped = container(home, "forever")
    assert stopped["status"] == "exited" and stopped["desired"] == "stopped"
    # A user's stop is final: no restart follows it.
    count = stopped["restart_count"]
    run(home, "run", "--name", "marker", "my-image", "true")  # a full round trip later
    assert container(home, "forever")["restart_count"] == count
    assert container(home, "forever")["status"] == "exited"


def test_stop_waits_the_grace_period_then_kills(home: Path) -> None:
    # As PID 1 without a handler, sleep ignores SIGTERM: stop kills it after the grace.
    run(home, "run", "-d", "--name", "deaf", "--stop-timeout", "1", "my-image", "sleep",
        "600")
    run(home, "run", "-d", "--name", "polite", "my-image", "sh", "-c",
        "trap 'echo bye; exit 7' TERM; while true; do sleep 0.1; done")
    wait_for(lambda: container(home, "polite")["status"] == "running", 20, "polite runs")
    run(home, "stop", "deaf")
    assert container(home, "deaf")["exit_code"] == 137
    run(home, "stop", "-t", "30", "polite")
    assert container(home, "polite")["exit_code"] == 7
    assert "bye" in run(home, "logs", "polite").stdout


def test_two_containers_share_one_image_and_a_corrupt_layer_is_refused(home: Path) -> None:
    run(home, "network", "create", "shared")  # an address each for their httpd
    run(home, "run", "-d", "--name", "one", "--network", "shared", "my-image")
    run(home, "run", "-d", "--name", "two", "--network", "shared", "my-image")
    for name in ("one", "two"):
        settled(home, name, "running")
    images = home / "agent" / "images"
    layers = sorted(p.name for p in (images / "layers").iterdir())
    assert len(layers) == 1  # extracted once, the lower layer of both overlays
    lowers = [line for line in Path("/proc/self/mountinfo").read_text().splitlines()
              if layers[0] in line and "overlay" in line]
    assert len(lowers) == 2
    refused = run(home, "image", "rm", "my-image", check=False)
    assert refused.returncode == 1 and "one" in refused.stderr and "two" in refused.stderr
    for name in ("one", "two"):
        run(home, "rm", "-f", name)
    run(home, "network", "rm", "shared")

    blob = images / "blobs" / "sha256" / layers[0]
    data = bytearray(blob.read_bytes())
    data[len(data) // 2] ^= 0xFF
    blob.write_bytes(bytes(data))
    failed = run(home, "run", "-d", "--name", "three", "my-image", check=False)
    assert failed.returncode == 1 and "corrupt" in failed.stderr
    assert "Traceback" not in failed.stderr
    assert rootfs.mounts_under(home) == []


async def test_a_hundred_image_container_cycles_leave_nothing(tmp_path: Path) -> None:
    """Create, run and remove an image container on a bridge network a hundred times:
    no mount, cgroup, runc state, namespace, link or process may remain."""
    from meshlet.agent.agent import Agent
    from meshlet.api.client import Client
    from meshlet.image.store import ImageStore
    from meshlet.server.main import Server, ServerOptions
    from tests.conftest import async_management_token, async_wait_until
    from tests.netns.test_containers import children

    assert await asyncio.to_thread(machine_is_clean, tmp_path)
    image = ImageStore(tmp_path / "agent" / "images").import_file(
        busybox_rootfs(tmp_path / "busybox.tar"), "cycle:1", [HTTPD])
    server = await Server.start(tmp_path / "server", "127.0.0.1", 0,
                                ServerOptions(node_ttl=3600.0))
    token = await async_management_token(tmp_path / "server")
    agent = Agent(server.url, tmp_path / "agent", "image-cycle-node", token=token)
    agent.run_containers()
    try:
        async with Client(server.url, token=token) as client:
            await client.network_create("cycle", subnet="10.225.0.0/24")

            async def one_cycle(i: int) -> None:
                name = f"i{i}"
                await client.container_create(name, [], "image-cycle-node",
                                              networks=["cycle"], image="cycle:1",
                                              image_id=image.id)

                async def running() -> bool:
                    found = (await client.container(name))[0]
                    assert found["status"] != "failed", found["detail"]
                    return bool(found["status"] == "running")
                await async_wait_until(running, 30, f"{name} to run")
                await client.container_delete(name)

                async def cleaned() -> bool:
                    return await asyncio.to_thread(machine_is_clean, tmp_path)
                await async_wait_until(cleaned, 30, f"{name} to be cleaned up")

            await one_cycle(0)
            kids = children()
            for i in range(1, 101):
                await one_cycle(i)
            assert children() <= kids
            await client.network_delete("cycle")
    finally:
        await agent.stop()
        await server.stop()
    assert await asyncio.to_thread(machine_is_clean, tmp_path)


def test_kill_9_of_the_agent_then_its_restart_leaves_nothing_behind(tmp_path: Path
                                                                     ) -> None:
    """An image container outlives an agent killed with -9 (its PID 1 ignores the
    SIGTERM that reaches it); the next start kills and deletes it, unmounts its rootfs,
    and runs the container again, as it is still wanted."""
    assert machine_is_clean(tmp_path)
    with downed(tmp_path):
        up = ("up", "--detach", "--http", f"127.0.0.1:{free_port()}", "--data-dir",
              str(tmp_path / "up"))  # the cluster's state outlives the crash
        meshlet(*up, home=tmp_path)
        busybox_rootfs(tmp_path / "busybox.tar")
        meshlet("image", "import", str(tmp_path / "busybox.tar"), "--name", "deaf",
                home=tmp_path)
        meshlet("network", "create", "crashnet", "--subnet", "10.226.0.0/24",
                home=tmp_path)
        meshlet("run", "-d", "--name", "survivor", "--network", "crashnet", "deaf",
                "sleep", "600", home=tmp_path)
        first = container(tmp_path, "survivor")
        state = json.loads((tmp_path / "up.json").read_text())
        os.kill(state["pid"], 9)
        wait_for(lambda: not Path(f"/proc/{state['pid']}").exists(), 10, "the kill")
        assert Path(f"/proc/{first['pid']}").exists()  # left running by the crash
        assert runc_ids() != []
        meshlet(*up, home=tmp_path)
        wait_for(lambda: not Path(f"/proc/{first['pid']}").exists(), 20,
                 "the new start to kill what the crashed one left")

        def again() -> bool:
            now = container(tmp_path, "survivor")
            return now["status"] == "running" and now["pid"] != first["pid"]
        wait_for(again, 30, "the container to run again")
        assert len(runc_ids()) == 1
        assert rootfs.mounts_under(tmp_path) == [
            str(tmp_path / "up" / "agent" / "containers" / "survivor" / "rootfs")]
        meshlet("rm", "-f", "survivor", home=tmp_path)
        meshlet("network", "rm", "crashnet", home=tmp_path)
    wait_for(lambda: machine_is_clean(tmp_path), 30, "down to leave nothing behind")


def test_an_up_file_service_runs_its_image_beside_its_sidecar(tmp_path: Path) -> None:
    """Two replicas of an image service on a network, behind the ingress gateway over
    mutual TLS; each is a runc container with its own PID 1 in the replica's namespace,
    and `down` leaves nothing."""
    busybox_rootfs(tmp_path / "busybox.tar")
    meshlet("image", "import", str(tmp_path / "busybox.tar"), "--name", "web-image",
            home=tmp_path)  # the store `up` uses: MESHLET_HOME's agent/images
    gateway = free_port()
    (tmp_path / "up.yaml").write_text(
        "services:\n  web:\n    image: web-image\n"
        "    command: [sh, -c, 'exec httpd -f -p $PORT -h /www']\n"
        f"    replicas: 2\n    network: imgnet\n    memory: 32m\n    ingress: {gateway}\n"
        "    check: {http: /}\n")
    with clean_daemon(tmp_path, str(tmp_path / "up.yaml")):
        wait_for(lambda: fetch_loopback(gateway) == "hello from busybox\n", 30,
                 "the gateway to reach an image replica")
        ids = runc_ids()
        assert len(ids) == 2 and all(".web-" in i for i in ids)
        for container_id in ids:
            state = json.loads(subprocess.run(
                ["runc", "--root", "/run/meshlet/runc", "state", container_id],
                capture_output=True, text=True, check=True).stdout)
            cmdline = Path(f"/proc/{state['pid']}/cmdline").read_bytes()
            assert cmdline.startswith(b"httpd\0-f\0-p\0")  # exec'd: its own PID 1
            limit = Path(f"/sys/fs/cgroup/memory/meshlet/{container_id}/"
                         "memory.limit_in_bytes").read_text()
            assert int(limit) == 32 << 20
        refused = meshlet("image", "rm", "web-image", home=tmp_path, check=False)
        assert refused.returncode == 1 and "in use" in refused.stderr
    wait_for(lambda: machine_is_clean(tmp_path), 30, "down to leave nothing behind")


def fetch_loopback(port: int) -> str:
    import urllib.request
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=5) as resp:
            return str(resp.read().decode())
    except OSError:
        return ""

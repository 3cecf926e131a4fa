"""Deployments across three hosts (needs root): the plain web-app manifest, applied
unchanged, gives three ready replicas spread one per host and reachable on port 80 of
every host's address; a replica killed with SIGKILL comes back; a host that leaves has
its replica placed on another, and once back, with no replica, still serves port 80;
applying again changes nothing."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from meshlet.agent.host_networks import namespace_prefix
from meshlet.net import netns
from tests.conftest import wait_until
from tests.images import busybox_rootfs, have_busybox
from tests.netns.hosts import Hosts, in_ns

pytestmark = [
    pytest.mark.skipif(os.geteuid() != 0,
                       reason="needs root: creates network namespaces, links and containers"),
    pytest.mark.skipif(not have_busybox(), reason="needs a static busybox (busybox-static)"),
]
WEB = Path(__file__).resolve().parents[2] / "examples" / "kube" / "web.yaml"
FETCH = ("import sys, urllib.request; print(urllib.request.urlopen(sys.argv[1], "
         "timeout=5).read().decode())")
CONNECT = ("import socket, sys; "
           "socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=5).close()")


@pytest.fixture
def hosts(tmp_path: Path) -> Iterator[Hosts]:
    assert netns.ours() == [], "the machine is not clean before the test"
    rootfs = busybox_rootfs(tmp_path / "web.tar")
    with Hosts(3, node_ttl="2s") as found:
        for host in found.names:
            subprocess.run([sys.executable, "-m", "meshlet", "image", "import", str(rootfs),
                            "--name", "web:1", "--data-dir", str(found.tmp / f"{host}-data")],
                           check=True, capture_output=True, timeout=60)
        yield found
    assert netns.ours() == [], "agents left pod namespaces behind"
    assert found.left_mounts == [], "agents left pods' root filesystems mounted"


def pods(hosts: Hosts) -> list[dict[str, Any]]:
    """Each pod as ``get pods -o json`` shows it, flattened: name, node, ready, ..."""
    items = json.loads(hosts.cli("get", "pods", "-o", "json"))["items"]
    return [{"name": p["metadata"]["name"], "node": p["spec"]["nodeName"],
             "ready": p["status"]["ready"], "restarts": p["status"]["restartCount"],
             "pid": p["status"]["pid"], "detail": p["status"]["message"]} for p in items]


def ready_pods(hosts: Hosts, count: int) -> list[dict[str, Any]] | None:
    found = [p for p in pods(hosts) if p["ready"]]
    return found if len(found) == count and len(pods(hosts)) == count else None


def until(hosts: Hosts, predicate: Any, what: str, timeout: float = 120) -> Any:
    """wait_until, saying on failure what the pods and the agents' logs show."""
    try:
        return wait_until(predicate, timeout, what)
    except AssertionError as exc:
        logs = "\n".join(f"--- {h}\n" + (hosts.tmp / f"{h}.log").read_text()[-3000:]
                         for h in hosts.names if (hosts.tmp / f"{h}.log").exists())
        raise AssertionError(f"{exc}\npods: {pods(hosts)}\n"
                             f"{hosts.cli('describe', 'deployment', 'web')}\n{logs}") from None


def fetch(hosts: Hosts, host: str) -> str:
    done = subprocess.run(in_ns(hosts.under, sys.executable, "-c", FETCH,
                                f"http://{hosts.address(host)}:80/"),
                          capture_output=True, text=True, timeout=30, check=False)
    return done.stdout if done.returncode == 0 else ""


def reaches(hosts: Hosts, host: str, instance: dict[str, Any]) -> bool:
    """Whether ``host``'s own namespace opens a connection to ``instance``'s sidecar."""
    return subprocess.run(in_ns(hosts.ns(host), sys.executable, "-c", CONNECT,
                                instance["address"], str(instance["port"])),
                          capture_output=True, timeout=30, check=False).returncode == 0


def test_web_manifest_runs_three_ready_replicas_spread_and_reachable_on_port_80(
        hosts: Hosts) -> None:
    applied = hosts.cli("apply", "-f", str(WEB))
    assert applied.splitlines() == ["deployment.apps/web created", "service/web created"]

    running = until(hosts, lambda: ready_pods(hosts, 3), "three ready replicas")
    assert sorted(p["node"] for p in running) == ["host1", "host2", "host3"]
    for host in hosts.names:
        body = wait_until(lambda h=host: fetch(hosts, h), 60, f"port 80 on {host}")
        assert body.strip() == "hello from busybox"
    # Each host's own namespace (where its gateway for port 80 runs) reaches every
    # replica, those on the other hosts too, not only its own.
    for host in hosts.names:
        for replica in json.loads(hosts.cli("-o", "json", "instances", "web")):
            wait_until(lambda h=host, r=replica: reaches(hosts, h, r), 30,
                       f"{host} to reach {replica['id']} on {replica['node']}")

    # Applying the same manifest again is a no-op.
    again = hosts.cli("apply", "-f", str(WEB))
    assert again.splitlines() == ["deployment.apps/web unchanged", "service/web unchanged"]
    assert {p["name"] for p in pods(hosts)} == {p["name"] for p in running}

    # kill -9 of a replica's app: it is started again and is ready again.
    victim = running[0]
    pid = int(victim["pid"])
    os.kill(pid, signal.SIGKILL)

    def back() -> bool:
        now = {p["name"]: p for p in pods(hosts)}
        pod = now.get(victim["name"])
        return bool(pod and pod["restarts"] >= 1 and pod["ready"] and pod.get("pid") != pid)
    wait_until(back, 120, "the killed replica to run and be ready again")
    assert fetch(hosts, "host1").strip() == "hello from busybox"

    # A host that leaves: its replica is placed on one of the others.
    gone = next(p for p in pods(hosts) if p["node"] == "host3")
    hosts.stop_agent("host3", kill=True)
    def off_host3() -> list[dict[str, Any]] | None:
        found = ready_pods(hosts, 3)
        return found if found and all(p["node"] != "host3" for p in found) else None
    moved = wait_until(off_host3, 120, "the lost host's replica on another host") or []
    assert gone["name"] not in {p["name"] for p in moved}
    assert sorted({p["node"] for p in moved}) == ["host1", "host2"]
    hosts.start_agent("host3")  # it sweeps what its killed run left (pods, namespaces)
    wait_until(lambda: not [n for n in netns.ours()
                            if n.startswith(namespace_prefix("host3"))], 60,
               "host3's agent to remove what its killed run left")
    # host3 runs no replica now, and its port 80 still reaches them on the others: its
    # host joins the pods' overlay for the Service's gateway, as every node serves a
    # NodePort.
    assert not [p for p in pods(hosts) if p["node"] == "host3"]
    body = wait_until(lambda: fetch(hosts, "host3"), 60, "port 80 on host3, which has no pod")
    assert body.strip() == "hello from busybox"


LOAD = """
import sys, time, urllib.request
from pathlib import Path
url, stop = sys.argv[1], Path(sys.argv[2])
ok = failed = 0
errors = []
deadline = time.monotonic() + 300          # bounded: stops by itself
while not stop.exists() and time.monotonic() < deadline:
    try:
        with urllib.request.urlopen(url, timeout=10) as resp:
            resp.read()
            ok += resp.status == 200
            failed += resp.status != 200
    except Exception as exc:
        failed += 1
        errors.append(repr(exc)[:200])
print(ok, failed, errors[:5])
"""


def changed(tmp: Path, **replace_in_yaml: str) -> Path:
    text = WEB.read_text()
    for old, new in replace_in_yaml.items():
        assert old in text
        text = text.replace(old, new)
    path = tmp / f"web-{len(list(tmp.glob('web-*.yaml')))}.yaml"
    path.write_text(text)
    return path


def test_a_rolling_update_under_steady_traffic_fails_no_request_and_a_bad_one_stops(
        hosts: Hosts, tmp_path: Path) -> None:
    hosts.cli("apply", "-f", str(WEB))
    until(hosts, lambda: ready_pods(hosts, 3), "three ready replicas")
    first = {p["name"] for p in pods(hosts)}
    until(hosts, lambda: fetch(hosts, "host1"), "port 80 on host1", 60)

    stop = tmp_path / "stop"
    load = subprocess.Popen(in_ns(hosts.under, sys.executable, "-c", LOAD,
                                  f"http://{hosts.address('host1')}:80/", str(stop)),
                            stdout=subprocess.PIPE, text=True)
    try:
        updated = changed(tmp_path, **{'value: "hello"': 'value: "hi"'})
        assert hosts.cli("apply", "-f", str(updated)).splitlines()[0] == \
            "deployment.apps/web configured"
        hosts.cli("rollout", "status", "deployment/web", "--timeout", "180s")
    finally:
        stop.touch()
        out, _ = load.communicate(timeout=60)
    ok, failed, errors = out.split(" ", 2)
    assert int(ok) > 0
    assert int(failed) == 0, errors
    # The old replicas, terminating once the new are ready, are then gone.
    def only_three() -> list[dict[str, Any]] | None:
        found = pods(hosts)
        return found if len(found) == 3 else None
    now = until(hosts, only_three, "the old replicas to be gone")
    assert not {p["name"] for p in now} & first
    assert "2" in hosts.cli("rollout", "history", "deployment/web")

    # A rollout to an image no node has stops at its deadline and says why; the
    # replicas of the last good template keep serving, and undo goes back to it.
    broken = changed(tmp_path, **{"image: web:1": "image: missing:1",
                                  "replicas: 3": "replicas: 3\n  progressDeadlineSeconds: 15"})
    hosts.cli("apply", "-f", str(broken))
    done = subprocess.run(in_ns(hosts.under, sys.executable, "-m", "meshlet", "--addr",
                                hosts.url, "--token", hosts.token, "--ca-file",
                                str(hosts.ca_file), "rollout", "status", "deployment/web",
                                "--timeout", "120s"),
                          capture_output=True, text=True, timeout=180, check=False)
    assert done.returncode == 1
    assert "rollout failed" in done.stderr and "missing:1" in done.stderr
    assert fetch(hosts, "host2").strip() == "hello from busybox"
    assert "rolled back" in hosts.cli("rollout", "undo", "deployment/web")
    hosts.cli("rollout", "status", "deployment/web", "--timeout", "120s")
    assert all(p["ready"] for p in until(hosts, lambda: ready_pods(hosts, 3),
                                         "three ready replicas after the undo"))


HPA = """
apiVersion: autoscaling/v2
kind: HorizontalPodAutoscaler
metadata:
  name: web
spec:
  scaleTargetRef:
    apiVersion: apps/v1
    kind: Deployment
    name: web
  minReplicas: 1
  maxReplicas: 4
  metrics:
    - type: Pods
      pods:
        metric:
          name: requests_per_second
        target:
          type: AverageValue
          averageValue: "2"
  behavior:
    scaleDown:
      stabilizationWindowSeconds: 10
"""


def test_the_autoscaler_scales_up_under_load_and_down_after_the_window(
        hosts: Hosts, tmp_path: Path) -> None:
    (tmp_path / "hpa.yaml").write_text(HPA)
    hosts.cli("apply", "-f", str(WEB))
    until(hosts, lambda: ready_pods(hosts, 3), "three ready replicas")
    until(hosts, lambda: fetch(hosts, "host1"), "port 80 on host1", 60)
    assert hosts.cli("apply", "-f", str(tmp_path / "hpa.yaml")).strip() == \
        "horizontalpodautoscaler.autoscaling/web created"

    stop = tmp_path / "stop"
    load = subprocess.Popen(in_ns(hosts.under, sys.executable, "-c", LOAD,
                                  f"http://{hosts.address('host1')}:80/", str(stop)),
                            stdout=subprocess.PIPE, text=True)
    try:   # far above 2 requests per second per replica: up to maxReplicas
        until(hosts, lambda: ready_pods(hosts, 4), "four ready replicas under load")
        shown = hosts.cli("get", "hpa", "web")
        assert "requests_per_second: " in shown and "/2" in shown
        measured = [p["status"]["metrics"] for p in
                    json.loads(hosts.cli("get", "pods", "-o", "json"))["items"]]
        assert any((m.get("requests_per_second") or 0) > 0 and m.get("cpu") is not None
                   for m in measured), measured
    finally:
        stop.touch()
        out, _ = load.communicate(timeout=60)
    assert int(out.split(" ", 1)[0]) > 0
    # Idle, the recommendation is minReplicas; it holds once the window has passed.
    until(hosts, lambda: ready_pods(hosts, 1), "one replica after the window")
    described = hosts.cli("describe", "hpa", "web")
    assert "SuccessfulRescale" in described
    assert "New size: 4; reason: pods metric requests_per_second above target" in described
    assert "New size: 1; reason: All metrics below target" in described
    scrape = subprocess.run(in_ns(hosts.under, sys.executable, "-c", SCRAPE,
                                  f"{hosts.url}/metrics", str(hosts.ca_file)),
                            capture_output=True, text=True, timeout=30, check=True).stdout
    counted = {line.split("{")[1].split("}")[0]: float(line.rsplit(" ", 1)[1])
               for line in scrape.splitlines()
               if line.startswith("meshlet_autoscaler_decisions_total{")}
    assert counted['direction="up"'] >= 1 and counted['direction="down"'] >= 1


SCRAPE = ("import ssl, sys, urllib.request; print(urllib.request.urlopen(sys.argv[1], "
          "context=ssl.create_default_context(cafile=sys.argv[2]), timeout=5).read().decode())")

"""A real Prometheus (Debian's) scrapes a `meshlet up` of the shop through the file
`meshlet prometheus-sd` keeps: every server, agent and sidecar target is up, and PromQL
gives the frontend → catalog request rate and p99. Every endpoint's scrape passes
`promtool check metrics`, and every metric the Grafana dashboards name is exported by
one of them (and every dashboard expression evaluates)."""

from __future__ import annotations

import json
import math
import shutil
import signal
import subprocess
import sys
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.dashboards import SYNTHETIC, dashboards, exported, expressions, metric_names, substituted
from tests.e2e.helpers import Traffic, alive, descendants, env_for, free_port, wait_for
from tests.e2e.test_up import Up

pytestmark = [pytest.mark.e2e, pytest.mark.skipif(
    shutil.which("prometheus") is None or shutil.which("promtool") is None,
    reason="needs Debian's prometheus and promtool")]

WINDOW = "15s"  # scrapes every second: a rate over many samples
# The callers' view of each pair (the callee's inbound series name the pair too).
RATE = ("sum by (source, destination) "
        f'(rate(meshlet_proxy_requests_total{{direction="outbound"}}[{WINDOW}]))')
P99 = ("histogram_quantile(0.99, sum by (le, source, destination) "
       "(rate(meshlet_proxy_request_duration_seconds_bucket"
       f'{{direction="outbound"}}[{WINDOW}])))')
EXPECTED = {"meshlet-server": 1, "meshlet-agent": 1, "meshlet-sidecar": 5}


def prometheus_config(targets: Path) -> str:
    return json.dumps({  # YAML is a superset of JSON
        "global": {"scrape_interval": "1s", "scrape_timeout": "1s",
                   "evaluation_interval": "1s"},
        "scrape_configs": [{"job_name": "meshlet", "file_sd_configs": [
            {"files": [str(targets)], "refresh_interval": "1s"}]}]})


@dataclass
class Observed:
    up: Up
    targets: Path
    prometheus: str  # its API's base URL
    sd: subprocess.Popen[str]
    traffic: Traffic

    def query(self, promql: str) -> list[dict[str, Any]]:
        url = f"{self.prometheus}/api/v1/query?" + urllib.parse.urlencode({"query": promql})
        with urllib.request.urlopen(url, timeout=10) as resp:
            body = json.load(resp)
        assert body["status"] == "success", body
        return list(body["data"]["result"])

    def listed(self) -> list[dict[str, Any]]:
        try:
            return list(json.loads(self.targets.read_text()))
        except (OSError, ValueError):
            return []


def ready(base: str, prometheus: subprocess.Popen[Any]) -> bool:
    """Its API answers 503 until the TSDB is open: wait on its own readiness probe."""
    assert prometheus.poll() is None, "Prometheus exited; see prometheus.log"
    try:
        with urllib.request.urlopen(f"{base}/-/ready", timeout=5) as resp:
            return bool(resp.status == 200)
    except (urllib.error.URLError, OSError):
        return False


def stop(proc: subprocess.Popen[Any], sig: int = signal.SIGTERM) -> int:
    if proc.poll() is None:
        proc.send_signal(sig)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)
    return proc.returncode


@pytest.fixture(scope="module")
def observed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Observed]:
    tmp = tmp_path_factory.mktemp("prometheus")
    up = Up(tmp / "home")
    procs: list[subprocess.Popen[Any]] = []
    children: set[int] = set()
    try:
        wait_for(up.all_passing, 60, "every shop instance to pass its checks")
        children = descendants(up.proc.pid)
        targets = tmp / "sd" / "meshlet.json"
        targets.parent.mkdir()
        sd = subprocess.Popen(
            [sys.executable, "-m", "meshlet", "--addr", up.addr, "prometheus-sd",
             str(targets), "--wait", "2"], env=env_for(up.home),
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        procs.append(sd)
        config = tmp / "prometheus.yml"
        config.write_text(prometheus_config(targets))
        port = free_port()
        log = open(tmp / "prometheus.log", "wb")  # closed once Prometheus has it
        prometheus = subprocess.Popen(
            ["prometheus", f"--config.file={config}",
             f"--storage.tsdb.path={tmp / 'tsdb'}", f"--web.listen-address=127.0.0.1:{port}"],
            stdout=log, stderr=subprocess.STDOUT, cwd=tmp)
        procs.append(prometheus)
        log.close()
        base = f"http://127.0.0.1:{port}"
        wait_for(lambda: ready(base, prometheus), 60, "Prometheus to be ready")
        with Traffic(up.ingress("frontend")) as traffic:
            yield Observed(up, targets, base, sd, traffic)
    finally:
        for proc in reversed(procs):
            stop(proc)
        if up.proc.poll() is None:
            stop(up.proc)
    assert alive(children) == set()  # the mesh's apps and sidecars went with it


def test_every_server_agent_and_sidecar_is_listed_and_up(observed: Observed) -> None:
    def listed_all() -> bool:
        jobs = [g["labels"]["job"] for g in observed.listed()]
        return {job: jobs.count(job) for job in set(jobs)} == EXPECTED
    wait_for(listed_all, 30, "prometheus-sd to list 1 server, 1 agent and 5 sidecars")
    listed = {g["targets"][0]: g["labels"] for g in observed.listed()}
    sidecars = {labels["meshlet_instance"]: labels["meshlet_service"]
                for labels in listed.values() if labels["job"] == "meshlet-sidecar"}
    assert sidecars == {"pricing-0": "pricing", "catalog-0": "catalog",
                        "catalog-1": "catalog", "catalog-2": "catalog",
                        "frontend-0": "frontend"}

    def all_up() -> list[dict[str, Any]] | None:
        found = observed.query("up")
        ups = {r["metric"]["instance"]: r for r in found}
        if set(ups) != set(listed) or any(r["value"][1] != "1" for r in found):
            return None
        return found
    found = wait_for(all_up, 60, "Prometheus to scrape every target, each up")
    for result in found:
        labels = listed[result["metric"]["instance"]]
        assert {k: result["metric"].get(k) for k in labels} == labels  # the target labels


def test_frontend_to_catalog_rate_and_p99_per_service_pair(observed: Observed) -> None:
    wait_for(lambda: observed.traffic.ok > 0, 30, "traffic through the frontend")

    def measured() -> tuple[float, float] | None:
        pair = ("frontend", "catalog")
        rate = {(r["metric"].get("source"), r["metric"].get("destination")):
                float(r["value"][1]) for r in observed.query(RATE)}
        p99 = {(r["metric"].get("source"), r["metric"].get("destination")):
               float(r["value"][1]) for r in observed.query(P99)}
        if rate.get(pair, 0) > 0 and math.isfinite(p99.get(pair, math.nan)):
            return rate[pair], p99[pair]
        return None
    rate, p99 = wait_for(measured, 90, "frontend → catalog's rate and p99 in Prometheus")
    assert rate > 0 and 0 < p99 < 30
    assert observed.traffic.ok > 0 and observed.traffic.failed == []


def test_every_endpoints_scrape_passes_promtool(observed: Observed) -> None:
    wait_for(lambda: len(observed.listed()) == sum(EXPECTED.values()), 30, "every target")
    wait_for(lambda: observed.traffic.ok > 50, 30, "traffic, so histograms have samples")
    for group in observed.listed():
        checked = subprocess.run(["promtool", "check", "metrics"], input=scrape(group),
                                 capture_output=True, timeout=30, check=False)
        assert checked.returncode == 0, (group, checked.stdout, checked.stderr)


def scrape(group: dict[str, Any]) -> bytes:
    labels = group["labels"]
    url = f"{labels.get('__scheme__', 'http')}://{group['targets'][0]}" \
          f"{labels.get('__metrics_path__', '/metrics')}"
    return bytes(urllib.request.urlopen(url, timeout=5).read())


def test_every_metric_the_dashboards_name_is_exported(observed: Observed) -> None:
    wait_for(lambda: len(observed.listed()) == sum(EXPECTED.values()), 30, "every target")
    names = set(SYNTHETIC)
    jobs = set()
    for group in observed.listed():
        names |= exported(scrape(group).decode())
        jobs.add(group["labels"]["job"])
    assert jobs == set(EXPECTED)  # a server, an agent and sidecars were scraped
    missing = [(board, where, name) for board, content in dashboards().items()
               for where, expr in expressions(content)
               for name in sorted(metric_names(substituted(expr))) if name not in names]
    assert missing == [], "dashboards name metrics nobody exports"
    for board, content in dashboards().items():
        for where, expr in expressions(content):
            try:
                observed.query(substituted(expr))
            except urllib.error.HTTPError as exc:  # 400: Prometheus cannot parse it
                raise AssertionError(f"{board} {where}: {exc.read()[:300]!r}") from None


def test_prometheus_sd_stops_on_sigterm(observed: Observed) -> None:
    """Run last (in file order): the file stays as it was last written."""
    before = observed.targets.read_bytes()
    assert stop(observed.sd) == 0, observed.sd.stderr.read() if observed.sd.stderr else ""
    assert observed.targets.read_bytes() == before
    assert [p.name for p in observed.targets.parent.iterdir()] == ["meshlet.json"]

"""The Grafana dashboards and their provisioning files are well formed: every panel
reads the `$datasource` variable, every expression names meshlet's metrics (whether a
live scrape exports them is tests/e2e/test_prometheus.py's), and the per-pair panels
group by `source` and `destination` (contract A)."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from tests.dashboards import (
    DASHBOARDS,
    SYNTHETIC,
    dashboards,
    exported,
    expressions,
    metric_names,
    panels,
    substituted,
)

GRAFANA = DASHBOARDS.parent
BOARDS = dashboards()


def test_the_three_dashboards_are_there_with_distinct_uids() -> None:
    assert sorted(BOARDS) == ["control-plane.json", "mesh-overview.json",
                              "service-detail.json"]
    uids = [b["uid"] for b in BOARDS.values()]
    assert len(set(uids)) == 3 and all(uid.startswith("meshlet-") for uid in uids)


@pytest.mark.parametrize("name", sorted(BOARDS))
def test_every_panel_reads_the_datasource_variable(name: str) -> None:
    board = BOARDS[name]
    variables = board["templating"]["list"]
    assert (variables[0]["name"], variables[0]["type"], variables[0]["query"]) == (
        "datasource", "datasource", "prometheus")
    ids = []
    for panel in panels(board):
        ids.append(panel["id"])
        grid = panel["gridPos"]
        assert grid["x"] + grid["w"] <= 24, panel["title"]
        if panel["type"] == "row":
            continue
        assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}
        assert panel["targets"], panel["title"]
        for target in panel["targets"]:
            assert target["datasource"]["uid"] == "${datasource}"
    assert len(ids) == len(set(ids))
    for var in variables[1:]:
        assert var["datasource"]["uid"] == "${datasource}"


@pytest.mark.parametrize("name", sorted(BOARDS))
def test_every_expression_names_meshlet_metrics_only(name: str) -> None:
    for where, expr in expressions(BOARDS[name]):
        names = metric_names(substituted(expr))
        assert names, (where, expr)
        assert all(n.startswith("meshlet_") or n in SYNTHETIC for n in names), (where, names)
        assert "$" not in substituted(expr), (where, expr)  # every variable is known


def test_per_pair_panels_group_by_source_and_destination() -> None:
    pairs = [expr for _, expr in expressions(BOARDS["mesh-overview.json"])
             if "by (source, destination)" in expr or "by (le, source, destination)" in expr]
    assert any("meshlet_proxy_requests_total" in e and "rate(" in e for e in pairs)
    assert any(e.startswith("histogram_quantile(0.99") and
               "meshlet_proxy_request_duration_seconds_bucket" in e for e in pairs)


def test_the_control_plane_dashboard_shows_raft_and_watchers() -> None:
    names = set().union(*(metric_names(substituted(e))
                          for _, e in expressions(BOARDS["control-plane.json"])))
    assert {"meshlet_raft_term", "meshlet_raft_leader_changes_total",
            "meshlet_commit_latency_seconds_bucket", "meshlet_raft_apply_duration_seconds_bucket",
            "meshlet_raft_commit_index", "meshlet_raft_applied_index", "meshlet_raft_last_index",
            "meshlet_api_blocking_queries"} <= names


@pytest.mark.parametrize(("expr", "names"), [
    ('sum by (source, destination) (rate(meshlet_proxy_requests_total{direction="outbound", '
     'meshlet_service="x"}[1m]))', {"meshlet_proxy_requests_total"}),
    ("histogram_quantile(0.99, sum by (le) (rate(h_bucket[5m])))", {"h_bucket"}),
    ("a - on() group_right() max by (meshlet_instance) (b) == 1", {"a", "b"}),
    ('count(up{job="meshlet-agent"} == 0) or vector(0)', {"up"}),
    ('x{a="rate(y)"} / ignoring(code) z offset 5m', {"x", "z"}),
    ("sum(increase(c_total[$__range]))", {"c_total"}),
])
def test_metric_names_of_an_expression(expr: str, names: set[str]) -> None:
    assert metric_names(substituted(expr)) == names


def test_exported_names_know_each_type_and_its_suffixes() -> None:
    scrape = ("# HELP c_total x\n# TYPE c_total counter\n"
              "# HELP h x\n# TYPE h histogram\nh_bucket{le=\"+Inf\"} 1.0\nh_count 1.0\n"
              "h_sum 0.5\n# HELP s x\n# TYPE s summary\ns_count 0.0\ns_sum 0.0\n"
              "# HELP g x\n# TYPE g gauge\ng 1.0\n")
    assert exported(scrape) == {"c_total", "h_bucket", "h_sum", "h_count", "s", "s_sum",
                                "s_count", "g"}


def test_the_provisioning_files_point_at_the_dashboards_and_prometheus() -> None:
    dashboards_file = yaml.safe_load(
        (GRAFANA / "provisioning" / "dashboards" / "meshlet.yaml").read_text())
    assert dashboards_file["apiVersion"] == 1
    (provider,) = dashboards_file["providers"]
    assert provider["type"] == "file" and Path(provider["options"]["path"]).is_absolute()
    sources = yaml.safe_load(
        (GRAFANA / "provisioning" / "datasources" / "prometheus.yaml").read_text())
    (source,) = sources["datasources"]
    assert (source["type"], source["access"]) == ("prometheus", "proxy")
    assert source["url"].startswith("http")

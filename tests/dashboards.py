"""The Grafana dashboards in grafana/dashboards, as tests read them: every PromQL
expression (panels' targets, rows' nested panels, query variables), the metric names
each one names, and the names a scrape exports (a histogram ``h`` exports ``h_bucket``,
``h_sum`` and ``h_count``; a counter ``c`` exports ``c_total``)."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

DASHBOARDS = Path(__file__).resolve().parents[1] / "grafana" / "dashboards"
# Grafana's variables, as Prometheus would be sent them.
VARIABLES = {"$__rate_interval": "1m", "$__range": "30m", "$__interval": "15s",
             "$service": "catalog", "$server": ".*"}
# Series Prometheus makes itself for every target.
SYNTHETIC = {"up", "scrape_duration_seconds", "scrape_samples_scraped",
             "scrape_samples_post_metric_relabeling", "scrape_series_added"}
KEYWORDS = {"by", "without", "on", "ignoring", "group_left", "group_right", "and", "or",
            "unless", "bool", "offset", "inf", "nan"}
_STRING = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'')
_GROUPING = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)")
_IDENT = re.compile(r"(?<![\w.])([A-Za-z_:][A-Za-z0-9_:]*)(\s*\()?")
_LABEL_VALUES = re.compile(r"^\s*label_values\((.*),\s*[A-Za-z_][A-Za-z0-9_]*\s*\)\s*$",
                           re.DOTALL)


def dashboards() -> dict[str, dict[str, Any]]:
    return {path.name: json.loads(path.read_text()) for path in sorted(DASHBOARDS.glob("*.json"))}


def panels(board: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """Every panel, those inside rows included."""
    stack = list(board.get("panels", []))
    while stack:
        panel = stack.pop(0)
        yield panel
        stack.extend(panel.get("panels", []))


def expressions(board: dict[str, Any]) -> Iterator[tuple[str, str]]:
    """``(where, PromQL)`` of every panel target and query variable."""
    for panel in panels(board):
        for target in panel.get("targets", []):
            if "expr" in target:
                yield f"panel {panel['title']!r} {target['refId']}", target["expr"]
    for var in board.get("templating", {}).get("list", []):
        if var.get("type") == "query":
            query = var["query"]["query"] if isinstance(var["query"], dict) else var["query"]
            found = _LABEL_VALUES.match(query)
            yield f"variable {var['name']!r}", found[1] if found else query


def substituted(expr: str) -> str:
    """``expr`` with Grafana's variables replaced, as Prometheus would receive it."""
    for name in sorted(VARIABLES, key=len, reverse=True):
        expr = expr.replace(name, VARIABLES[name])
    return expr


def metric_names(expr: str) -> set[str]:
    """The metric names a PromQL expression selects (not its functions, keywords or
    label names)."""
    text = _STRING.sub('""', expr)
    text = re.sub(r"\{[^}]*\}", " ", text)    # label matchers
    text = re.sub(r"\[[^\]]*\]", " ", text)   # ranges
    text = _GROUPING.sub(" ", text)           # by (...), on (...), ...
    names = set()
    for found in _IDENT.finditer(text):
        name, call = found[1], found[2]
        if call is None and name.lower() not in KEYWORDS:
            names.add(name)
    return names


def exported(scrape: str) -> set[str]:
    """Every series name a scrape's families export (declared ones without samples yet
    included: a counter that has not moved is still exported)."""
    names: set[str] = set()
    suffixes = {"counter": ("_total",), "histogram": ("_bucket", "_sum", "_count"),
                "summary": ("", "_sum", "_count")}
    for family in text_string_to_metric_families(scrape):
        names |= {family.name + suffix for suffix in suffixes.get(family.type, ("",))}
        names |= {sample.name for sample in family.samples}
    return names

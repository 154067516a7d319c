"""The chart's alert rules and Grafana dashboard, against promtool and Fender's own metrics."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path
from typing import Any

import pytest
import yaml

from proxy.observe.metrics import Metrics
from proxy.observe.slo_rules import WINDOWS
from tests.support.proxy import RunningProxy, config
from tests.support.tools import CHART, find, promtool, render, run

HERE = Path(__file__).parent
DASHBOARD = CHART / "files" / "dashboard.json"
# Labels that the scrape adds (a PodMonitor, or the prometheus.io annotations' usual job).
SCRAPE_LABELS = {"namespace", "pod", "container", "job", "instance"}
# Grafana's variables, as a query would see them.
GRAFANA_VARIABLES = {"$__rate_interval": "5m", "$namespace": ".*", "$route": ".*"}


def exported() -> dict[str, set[str]]:
    """Every series name Fender exports, with the label names it carries."""
    names: dict[str, set[str]] = {}
    metrics = Metrics()
    families = [*metrics.hot.describe(), *metrics.slo.describe()]
    described = [(f.name, f.type, f._labelnames) for f in families]
    for metric in vars(metrics).values():
        labels = getattr(metric, "_labelnames", None)
        if labels is not None:
            described.append((metric._name, metric._type, labels))
    for name, kind, labels in described:
        if kind == "counter":
            names[f"{name}_total"] = set(labels)
        elif kind == "histogram":
            names[f"{name}_bucket"] = {*labels, "le"}
            names[f"{name}_sum"] = names[f"{name}_count"] = set(labels)
        else:
            names[name] = set(labels)
    # What the SLO rules record (fender slo rules): the labels they aggregate by.
    recorded = {"namespace", "job", "route", "slo"}
    for window in WINDOWS:
        names[f"fender_slo:error_ratio:rate{window}"] = recorded
    names["fender_slo:error_budget_remaining"] = recorded
    return names


def dashboard_queries() -> list[tuple[str, str, str]]:
    """(panel title, PromQL, legend) of every query of the dashboard."""
    data = json.loads(DASHBOARD.read_text())
    return [
        (panel["title"], target["expr"], target.get("legendFormat", ""))
        for panel in data["panels"]
        for target in panel["targets"]
    ]


def alert_rules(*values: Path) -> dict[str, Any]:
    """The `groups` of the rendered PrometheusRule: a promtool rules file."""
    rule = find(render(*values, **{"alerts.enabled": "true"}), "PrometheusRule", "demo-fender")
    spec: dict[str, Any] = rule["spec"]
    return spec


def as_promql(expr: str) -> str:
    for variable, value in GRAFANA_VARIABLES.items():
        expr = expr.replace(variable, value)
    return expr


def labels_used(expr: str) -> set[str]:
    """Label names in selectors and in by/without clauses."""
    used = set()
    for selector in re.findall(r"\{([^}]*)\}", expr):
        used |= set(re.findall(r"([a-zA-Z_]\w*)\s*(?:=~|!~|!=|=)", selector))
    for clause in re.findall(r"\b(?:by|without)\s*\(([^)]*)\)", expr):
        used |= {name.strip() for name in clause.split(",") if name.strip()}
    return used


def check_names(expr: str, extra_labels: set[str]) -> None:
    known = exported()
    metrics = set(re.findall(r"\bfender_[\w:]+", expr))
    assert metrics, f"names no Fender metric: {expr}"
    unknown = metrics - known.keys()
    assert not unknown, f"{sorted(unknown)} are not exported by Fender: {expr}"
    allowed = SCRAPE_LABELS.union(*(known[m] for m in metrics))
    stray = (labels_used(expr) | extra_labels) - allowed
    assert not stray, f"labels {sorted(stray)} are on none of {sorted(metrics)}: {expr}"


def test_alert_rules_pass_promtool_check(tmp_path: Path) -> None:
    for values in ((), (CHART / "ci" / "monitoring-values.yaml",)):
        path = tmp_path / "alerts.yaml"
        path.write_text(yaml.safe_dump(alert_rules(*values)))
        out = run(promtool(), "check", "rules", path).stdout
        assert "SUCCESS: 7 rules found" in out


def test_alerts_fire_on_what_they_name_and_only_then(tmp_path: Path) -> None:
    """alerts_test.yaml: each alert fires on its series and stays quiet beside it."""
    (tmp_path / "alerts.yaml").write_text(yaml.safe_dump(alert_rules()))
    shutil.copy(HERE / "alerts_test.yaml", tmp_path)
    out = run(promtool(), "test", "rules", tmp_path / "alerts_test.yaml").stdout
    assert "SUCCESS" in out


def test_alerts_name_fender_metrics_and_their_labels() -> None:
    rules = [rule for group in alert_rules()["groups"] for rule in group["rules"]]
    assert {rule["alert"] for rule in rules} == {
        "FenderCircuitOpen",
        "FenderErrorRatioHigh",
        "FenderFallbacksServed",
        "FenderConfigReloadFailed",
        "FenderRetryBudgetExhausted",
        "FenderDeadLettersGrowing",
        "FenderQueueOldestTooOld",
    }
    for rule in rules:
        templated = " ".join(rule["annotations"].values())
        check_names(rule["expr"], set(re.findall(r"\$labels\.(\w+)", templated)))


def test_dashboard_shows_what_operators_ask_for() -> None:
    data = json.loads(DASHBOARD.read_text())
    titles = {panel["title"] for panel in data["panels"]}
    for wanted in (
        "Requests by route",
        "Outcomes",
        "Latency percentiles",
        "Circuit states",
        "Rate-limit waits",
        "Fallbacks by route",
        "Error budget left",
        "Burn rate by route",
        "Queue depth",
        "Oldest queued message",
        "Deliveries by result",
        "Dead letters and refused accepts",
    ):
        assert wanted in titles
    assert len({panel["id"] for panel in data["panels"]}) == len(data["panels"])


@pytest.mark.parametrize(("panel", "expr", "legend"), dashboard_queries())
def test_dashboard_queries_name_fender_metrics_and_their_labels(
    panel: str, expr: str, legend: str
) -> None:
    check_names(as_promql(expr), set(re.findall(r"\{\{\s*(\w+)\s*\}\}", legend)))


def test_dashboard_queries_are_valid_promql(tmp_path: Path) -> None:
    """promtool parses each query, as a recording rule, with Grafana's variables set."""
    rules = [
        {"record": f"fender:dashboard:{i}", "expr": as_promql(expr)}
        for i, (_, expr, _) in enumerate(dashboard_queries())
    ]
    path = tmp_path / "dashboard-rules.yaml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
    out = run(promtool(), "check", "rules", path).stdout
    assert f"SUCCESS: {len(rules)} rules found" in out


def test_dashboard_configmap_carries_the_json_for_grafanas_sidecar() -> None:
    configmap = find(render(**{"dashboard.enabled": "true"}), "ConfigMap", "demo-fender-dashboard")
    assert configmap["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert json.loads(configmap["data"]["fender.json"]) == json.loads(DASHBOARD.read_text())


async def test_alerted_counters_exist_at_zero_before_their_first_event(
    proxy_factory: Any, upstream: Any
) -> None:
    """PromQL's increase() misses a series' first event unless a 0 was scraped before it."""
    proxy: RunningProxy = await proxy_factory(
        config(
            {"up": {"endpoints": [upstream.url]}},
            routes=[{"name": "r", "upstream": "up", "policy": "p"}],
            policies={
                "p": {
                    "retry": {"attempts": 2},
                    "fallback": {"chain": [{"static": {"status": 503}}]},
                }
            },
        )
    )
    exposition = proxy.fender.metrics.render().decode()
    for series in (
        'fender_fallbacks_total{kind="static",route="r"} 0.0',
        'fender_retry_budget_exhausted_total{route="r"} 0.0',
        'fender_config_reloads_total{result="failure"} 0.0',
        'fender_config_reloads_total{result="success"} 0.0',
    ):
        assert series in exposition.splitlines()

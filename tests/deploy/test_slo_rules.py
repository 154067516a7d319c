"""The SLO rules: `fender slo rules` and the chart write the same, promtool passes them,
and each alert fires on a burn and stays quiet on a healthy route."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.support.tools import CHART, ROOT, find, promtool, render, run

HERE = Path(__file__).parent
POLICY = HERE / "slo_policy.yaml"


def values(tmp_path: Path, policy: str, **slo: Any) -> Path:
    """A values file with this policy (--set cannot carry its commas) and `slo` values."""
    path = tmp_path / "values.yaml"
    path.write_text(yaml.safe_dump({"policy": policy, "slo": slo}))
    return path


def chart_rules(tmp_path: Path, policy: str, **slo: Any) -> dict[str, Any]:
    """The spec of the chart's SLO PrometheusRule for this policy."""
    manifests = render(values(tmp_path, policy, enabled=True, **slo))
    rule = find(manifests, "PrometheusRule", "demo-fender-slo")
    spec: dict[str, Any] = rule["spec"]
    return spec


def cli_rules(policy: str, tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    path = tmp_path / "fender.yaml"
    path.write_text(policy)
    return run(sys.executable, "-m", "proxy", "slo", "rules", path, *args, check=False, cwd=ROOT)


VARIANTS = {
    "the test policy": (POLICY.read_text(), {}),
    "hours, milliseconds, minutes and four nines": (
        POLICY.read_text()
        .replace("window: 28d", "window: 100h")
        .replace("threshold: 2s", "threshold: 1500ms")
        .replace("threshold: 500ms", "threshold: 1m")
        .replace("99.95%", "99.99%"),
        {},
    ),
    "a selector and severities of one's own": (
        POLICY.read_text(),
        {"selector": 'job="shop/web"', "severity": {"page": "critical", "ticket": "warning"}},
    ),
}


@pytest.mark.parametrize("variant", VARIANTS)
def test_fender_slo_rules_and_the_chart_write_the_same(variant: str, tmp_path: Path) -> None:
    policy, slo = VARIANTS[variant]
    severity = slo.get("severity", {"page": "page", "ticket": "ticket"})
    args = ["--selector", slo.get("selector", 'namespace="shop"')]
    args += ["--page-severity", severity["page"], "--ticket-severity", severity["ticket"]]
    printed = cli_rules(policy, tmp_path, *args)
    assert printed.returncode == 0, printed.stderr
    rule = yaml.safe_load(printed.stdout)
    assert rule["kind"] == "PrometheusRule"
    assert rule["spec"] == chart_rules(tmp_path, policy, **slo)
    plain = cli_rules(policy, tmp_path, *args, "--format", "rules")
    assert yaml.safe_load(plain.stdout) == rule["spec"]  # a rule file: the groups alone


def test_slo_rules_pass_promtool_check(tmp_path: Path) -> None:
    path = tmp_path / "slo_rules.yaml"
    path.write_text(yaml.safe_dump(chart_rules(tmp_path, POLICY.read_text())))
    out = run(promtool(), "check", "rules", path).stdout
    # chat and search: 2 objectives; pay: 1. Each: 7 ratios, 2 alerts and its budget.
    assert "SUCCESS: 50 rules found" in out


def test_each_alert_fires_on_a_burn_and_stays_quiet_on_a_healthy_route(tmp_path: Path) -> None:
    """slo_rules_test.yaml: fast and slow burns of availability and latency."""
    rules = chart_rules(tmp_path, POLICY.read_text())
    (tmp_path / "slo_rules.yaml").write_text(yaml.safe_dump(rules))
    shutil.copy(HERE / "slo_rules_test.yaml", tmp_path)
    out = run(promtool(), "test", "rules", tmp_path / "slo_rules_test.yaml").stdout
    assert "SUCCESS" in out


def test_a_policy_without_slos_gets_no_rules(tmp_path: Path) -> None:
    policy = POLICY.read_text().split("listeners:")[0] + (
        "listeners:\n  - name: egress\n    address: 127.0.0.1:15000\n"
        "    routes: [{name: r, upstream: u}]\nupstreams:\n  u: {endpoints: [https://x.example]}\n"
    )
    printed = cli_rules(policy, tmp_path)
    assert printed.returncode == 1 and "no route has an slo" in printed.stderr
    manifests = render(values(tmp_path, policy, enabled=True))
    assert not [m for m in manifests if m["kind"] == "PrometheusRule"]


def test_a_bad_policy_is_reported_as_fender_check_would(tmp_path: Path) -> None:
    printed = cli_rules(POLICY.read_text().replace("99.9%", "100%", 1), tmp_path)
    assert printed.returncode == 1
    assert "availability is between 0% and 100%, both excluded" in printed.stderr


def test_the_chart_renders_the_rules_only_when_asked(tmp_path: Path) -> None:
    manifests = render(values(tmp_path, POLICY.read_text()))
    assert not [m for m in manifests if m["kind"] == "PrometheusRule"]
    monitoring = render(CHART / "ci" / "monitoring-values.yaml")
    rule = find(monitoring, "PrometheusRule", "demo-fender-slo")
    assert rule["metadata"]["labels"]["release"] == "prometheus"

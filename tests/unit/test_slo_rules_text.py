"""The rules' text: the workbook's burn rates, scaled to the window, and numbers written
as the chart writes them."""

from __future__ import annotations

from proxy.observe.slo import Objective
from proxy.observe.slo_rules import alerts as alert_rules
from proxy.observe.slo_rules import number, percent, rule_groups


def test_numbers_are_written_as_go_templates_print_them():
    assert [number(x) for x in (2.0, 0.25, 60.0, 1e-05)] == ["2", "0.25", "60", "1e-05"]
    assert [percent(x) for x in (0.999, 0.95, 0.9995, 0.99999)] == [
        "99.9",
        "95",
        "99.95",
        "99.999",
    ]


def test_the_workbooks_burn_rates_for_30d_and_scaled_for_another_window():
    month = Objective("chat", "availability", 0.999, None, 720)
    fast, slow = alert_rules(month, "", {"page": "page", "ticket": "ticket"})
    assert fast["alert"] == "FenderErrorBudgetBurnFast" and fast["labels"]["severity"] == "page"
    assert 'rate1h{route="chat", slo="availability"} > 14.4 * (100 - 99.9) / 100' in fast["expr"]
    assert "rate5m" in fast["expr"] and "rate6h" in fast["expr"] and "> 6 * (" in fast["expr"]
    assert "rate1d" in slow["expr"] and "rate2h" in slow["expr"] and "> 3 * (" in slow["expr"]
    assert "rate3d" in slow["expr"] and "> 1 * (" in slow["expr"]
    weeks = Objective("pay", "latency", 0.95, 2.0, 672)
    fast, _ = alert_rules(weeks, 'namespace="shop"', {"page": "p", "ticket": "t"})
    assert "> 14.4 * 672 / 720 * (100 - 95) / 100" in fast["expr"]
    assert 'rate1h{route="pay", slo="latency", namespace="shop"}' in fast["expr"]
    assert "95% of answers with headers within 2s over 28d" in fast["annotations"]["description"]


def test_one_group_per_route_and_one_for_the_budgets():
    groups = rule_groups(
        [
            Objective("chat", "availability", 0.999, None, 720),
            Objective("chat", "latency", 0.95, 2.0, 720),
            Objective("pay", "availability", 0.9995, None, 720),
        ]
    )
    assert [g["name"] for g in groups] == ["fender-slo-chat", "fender-slo-pay", "fender-slo-budget"]
    assert len(groups[0]["rules"]) == 2 * 7 + 2 * 2
    assert groups[2]["interval"] == "5m"
    assert "[30d]" in groups[2]["rules"][0]["expr"]
    assert rule_groups([]) == []

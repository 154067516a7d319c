"""`fender slo rules`: the Prometheus rules of a policy file's objectives.

Per SLO route, per objective (availability, latency): recording rules for the error
ratio (bad answers over answers) over 5m, 30m, 1h, 2h, 6h, 1d and 3d, and the SRE
workbook's multi-window, multi-burn-rate alerts (chapter 5, "Alerting on SLOs"):
- FenderErrorBudgetBurnFast, a page: 2% of the window's budget spent in 1h (14.4x the
  sustainable rate for a 30d window), still burning over the last 5m; or 5% in 6h (6x),
  still over the last 30m;
- FenderErrorBudgetBurnSlow, a ticket: 10% spent in 1d (3x), still over the last 2h; or
  10% in 3d (1x), still over the last 6h.
The long window makes the alert significant, the short one makes it stop soon after the
burn does. For a window other than 30d the rates scale with it (the same shares of the
budget). A budget-left recording over the whole window (every 5 minutes) feeds the
dashboard. The rules read `fender_slo_answers_total` and `fender_slo_bad_answers_total`
(observe/slo.py), so a threshold changed by a reload never mixes bucket series of
different ages.

The chart renders the same rules from `values.policy` (templates/slo-rules.yaml), and a
test holds the two to each other: change both together.
"""

from __future__ import annotations

from typing import Any

from .slo import Objective

WINDOWS = ("5m", "30m", "1h", "2h", "6h", "1d", "3d")
# alert, severity, (long window, short window, burn rate for a 30d window) twice, meaning
ALERTS = (
    (
        "FenderErrorBudgetBurnFast",
        "page",
        (("1h", "5m", "14.4"), ("6h", "30m", "6")),
        "2% of it in an hour, or 5% in 6 hours",
    ),
    (
        "FenderErrorBudgetBurnSlow",
        "ticket",
        (("1d", "2h", "3"), ("3d", "6h", "1")),
        "10% of it in a day, or in 3 days",
    ),
)
BY = "sum by (namespace, job, route)"
BUDGET_EVERY = "5m"


def number(value: float) -> str:
    """A number as Go's templates print a float64 (so the chart writes the same)."""
    text = repr(float(value))
    return text[:-2] if text.endswith(".0") else text


def percent(ratio: float) -> str:
    return number(round(ratio * 100, 9))


def _window(hours: int) -> str:
    return f"{hours // 24}d" if hours % 24 == 0 else f"{hours}h"


def _match(objective: Objective, selector: str) -> str:
    extra = f", {selector}" if selector else ""
    return f'{{route="{objective.route}", slo="{objective.slo}"{extra}}}'


def _labels(objective: Objective) -> dict[str, str]:
    # The expression keeps `route`; written again, it tells each route's rules apart
    # for promtool, which would call rules of one name and labels duplicates.
    return {"route": objective.route, "slo": objective.slo}


def _budget(objective: Objective) -> str:
    return f"(100 - {percent(objective.target)}) / 100"


def _rate(burn: str, objective: Objective) -> str:
    """The burn rate, scaled from the workbook's 30d window to the objective's."""
    if objective.window_h == 720:
        return burn
    return f"{burn} * {objective.window_h} / 720"


def _ratio(objective: Objective, selector: str, window: str) -> str:
    match = _match(objective, selector)
    bad = f"{BY} (rate(fender_slo_bad_answers_total{match}[{window}]))"
    answers = f"{BY} (rate(fender_slo_answers_total{match}[{window}]))"
    return f"{bad} / {answers}"


def what(objective: Objective) -> str:
    """The objective in words."""
    if objective.threshold is not None:
        return (
            f"{percent(objective.target)}% of answers with headers within "
            f"{number(objective.threshold)}s"
        )
    return f"{percent(objective.target)}% of answers good"


def recording(objective: Objective, selector: str) -> list[dict[str, Any]]:
    return [
        {
            "record": f"fender_slo:error_ratio:rate{window}",
            "expr": _ratio(objective, selector, window),
            "labels": _labels(objective),
        }
        for window in WINDOWS
    ]


def alerts(objective: Objective, selector: str, severities: dict[str, str]) -> list[dict[str, Any]]:
    match = _match(objective, selector)
    out = []
    for name, severity, pairs, meaning in ALERTS:
        terms = []
        for long, short, burn in pairs:
            above = f"{_rate(burn, objective)} * {_budget(objective)}"
            terms.append(
                f"(fender_slo:error_ratio:rate{long}{match} > {above}"
                f" and fender_slo:error_ratio:rate{short}{match} > {above})"
            )
        out.append(
            {
                "alert": name,
                "expr": " or ".join(terms),
                "labels": {"severity": severities[severity], **_labels(objective)},
                "annotations": {
                    "summary": f"Fender route {objective.route} burns its {objective.slo} "
                    f"error budget too fast ({severity})",
                    "description": "{{ $value | humanizePercentage }} of the answers of route "
                    + objective.route
                    + " in {{ $labels.namespace }} missed its objective ("
                    + what(objective)
                    + f" over {_window(objective.window_h)}), a pace that spends the budget "
                    + f"fast: {meaning}. The status page and fender status show the route now.",
                },
            }
        )
    return out


def budget(objective: Objective, selector: str) -> dict[str, Any]:
    match, window = _match(objective, selector), _window(objective.window_h)
    bad = f"{BY} (increase(fender_slo_bad_answers_total{match}[{window}]))"
    answers = f"{BY} (increase(fender_slo_answers_total{match}[{window}]))"
    return {
        "record": "fender_slo:error_budget_remaining",
        "expr": f"1 - ({bad} / {answers}) / ({_budget(objective)})",
        "labels": _labels(objective),
    }


def rule_groups(
    objectives: list[Objective],
    *,
    selector: str = "",
    page: str = "page",
    ticket: str = "ticket",
) -> list[dict[str, Any]]:
    """The rule groups: one per SLO route, and one for the budgets left."""
    severities = {"page": page, "ticket": ticket}
    groups: list[dict[str, Any]] = []
    by_route: dict[str, list[Objective]] = {}
    for objective in objectives:
        by_route.setdefault(objective.route, []).append(objective)
    for route, theirs in by_route.items():
        rules = [r for o in theirs for r in recording(o, selector)]
        rules += [a for o in theirs for a in alerts(o, selector, severities)]
        groups.append({"name": f"fender-slo-{route}", "rules": rules})
    if objectives:
        groups.append(
            {
                "name": "fender-slo-budget",
                "interval": BUDGET_EVERY,
                "rules": [budget(o, selector) for o in objectives],
            }
        )
    return groups


def prometheus_rule(groups: list[dict[str, Any]], name: str = "fender-slo") -> dict[str, Any]:
    """The Prometheus Operator's kind around the groups."""
    return {
        "apiVersion": "monitoring.coreos.com/v1",
        "kind": "PrometheusRule",
        "metadata": {"name": name, "labels": {"app.kubernetes.io/part-of": "fender"}},
        "spec": {"groups": groups},
    }

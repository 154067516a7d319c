"""What each route did lately, from snapshots of the per-request counters.

Nothing here runs per request: StatusBoard takes a snapshot every 5 seconds (and keeps
one a minute for the last hour), and a figure over a window is the difference between
the counters now and the oldest snapshot within it (plus a tick). So /status can say a
route's requests per second, good share, p50/p99 time to headers and outcome mix over the
last minute, a 5-minute sparkline, and each objective's good ratio and burn rate over the
last 5 minutes and hour. The budget over the SLO's whole window (30 days) is
Prometheus's to keep: `fender slo rules`.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from itertools import pairwise
from typing import Any

from ..config.slo import format_window
from ..observe.metrics import Metrics
from ..observe.request_metrics import relayout
from ..observe.slo import Counts, is_bad, is_counted
from ..state.clock import Clock

FINE_EVERY, FINE_KEPT = 5.0, 62  # 5 minutes and a tick of 5-second snapshots
COARSE_EVERY, COARSE_KEPT = 60.0, 62  # an hour and a tick of one-minute snapshots
LAST_MINUTE = 60.0
SLO_WINDOWS = (("5m", 300.0), ("1h", 3600.0))
SPARK_POINTS = 60  # of FINE_EVERY: five minutes

Outcomes = dict[str, dict[str, int]]  # route -> outcome -> count
Tally = tuple[int, int, int]  # answers, counted (by the good rule), bad


@dataclass
class Snapshot:
    taken: float
    outcomes: Outcomes
    tallies: dict[str, Tally]
    slo: Counts
    buckets: tuple[float, ...] = ()
    heads: dict[str, list[int]] = field(default_factory=dict)  # time-to-headers counts


def take(metrics: Metrics, now: float, *, histograms: bool = True) -> Snapshot:
    hot = metrics.hot
    outcomes: Outcomes = {}
    tallies: dict[str, list[int]] = {}
    for (route, _, outcome, status), count in list(hot.answers.items()):
        by_outcome = outcomes.setdefault(route, {})
        by_outcome[outcome] = by_outcome.get(outcome, 0) + count
        tally = tallies.setdefault(route, [0, 0, 0])
        tally[0] += count
        if is_counted(outcome, status):
            tally[1] += count
            if is_bad(outcome, status):
                tally[2] += count
    heads = {r: list(h[1]) for r, h in hot.durations.items()} if histograms else {}
    return Snapshot(
        now,
        outcomes,
        {route: (t[0], t[1], t[2]) for route, t in tallies.items()},
        metrics.slo.counts(),
        hot.buckets,
        heads,
    )


class Recent:
    def __init__(self, clock: Clock) -> None:
        self.clock = clock
        self.started = clock.monotonic()
        self.fine: deque[Snapshot] = deque(maxlen=FINE_KEPT)
        self.coarse: deque[Snapshot] = deque(maxlen=COARSE_KEPT)

    def snapshot(self, metrics: Metrics) -> None:
        now = self.clock.monotonic()
        self.fine.append(take(metrics, now))
        if not self.coarse or now - self.coarse[-1].taken >= COARSE_EVERY - 1e-6:
            self.coarse.append(take(metrics, now, histograms=False))

    def baseline(self, window: float) -> Snapshot | None:
        """The oldest snapshot within `window` (and a tick) of now; None: since start."""
        now = self.clock.monotonic()
        kept, every = (self.fine, FINE_EVERY) if window <= 300.0 else (self.coarse, COARSE_EVERY)
        for snapshot in kept:
            if now - snapshot.taken <= window + every:
                return snapshot
        return None

    def routes(self, metrics: Metrics, names: Sequence[str]) -> dict[str, dict[str, Any]]:
        """Per route (those named, then any other that answered): the figures above."""
        now = take(metrics, self.clock.monotonic())
        base = self.baseline(LAST_MINUTE)
        span = now.taken - (base.taken if base else self.started)
        seen = [*names, *(r for r in now.outcomes if r not in names)]
        return {route: self._route(route, now, base, span, metrics) for route in seen}

    def _route(
        self, route: str, now: Snapshot, base: Snapshot | None, span: float, metrics: Metrics
    ) -> dict[str, Any]:
        total = now.outcomes.get(route, {})
        before = base.outcomes.get(route, {}) if base else {}
        recent = {k: v - before.get(k, 0) for k, v in total.items() if v > before.get(k, 0)}
        tally = _minus(now.tallies.get(route, (0, 0, 0)), base.tallies.get(route) if base else None)
        heads = _delta_heads(route, now, base)
        return {
            "total": total,
            "last_minute": recent,
            "window_s": round(span, 1),
            "rate_per_s": round(tally[0] / span, 3) if span > 0 else None,
            "good_ratio": round(1 - tally[2] / tally[1], 6) if tally[1] else None,
            "latency_ms": {
                "p50": _ms(quantile(0.5, now.buckets, heads)),
                "p99": _ms(quantile(0.99, now.buckets, heads)),
            },
            "sparkline": self._sparkline(route, now),
            "slo": self._slo(route, now, metrics),
        }

    def _sparkline(self, route: str, now: Snapshot) -> dict[str, Any]:
        """Answers and bad answers per second, oldest first, one point per FINE_EVERY
        (the last one: since the last snapshot)."""
        points = [*self.fine, now][-(SPARK_POINTS + 1) :]
        rate: list[float] = []
        bad: list[float] = []
        for older, newer in pairwise(points):
            seconds = newer.taken - older.taken
            if seconds < 1.0:
                continue
            tally = _minus(newer.tallies.get(route, (0, 0, 0)), older.tallies.get(route))
            rate.append(round(tally[0] / seconds, 3))
            bad.append(round(tally[2] / seconds, 3))
        return {"every_s": FINE_EVERY, "rate_per_s": rate, "bad_per_s": bad}

    def _slo(self, route: str, now: Snapshot, metrics: Metrics) -> dict[str, Any] | None:
        out: dict[str, Any] = {}
        for (name, slo), objective in metrics.slo.objectives.items():
            if name != route:
                continue
            view: dict[str, Any] = {"objective": objective.target}
            if objective.threshold is not None:
                view["threshold_s"] = objective.threshold
            for label, window in SLO_WINDOWS:
                base = self.baseline(window)
                span = now.taken - (base.taken if base else self.started)
                answers, bad = now.slo.get((route, slo), (0, 0))
                if base is not None and (route, slo) in base.slo:
                    was = base.slo[(route, slo)]
                    answers, bad = answers - was[0], bad - was[1]
                ratio = bad / answers if answers else None
                view[f"last_{label}"] = {
                    "answers": answers,
                    "bad": bad,
                    "good_ratio": round(1 - ratio, 6) if ratio is not None else None,
                    "burn_rate": round(ratio / (1 - objective.target), 3)
                    if ratio is not None
                    else None,
                    "window_s": round(span, 1),
                }
            out[slo] = view
            out["window"] = format_window(objective.window_h)
        if not out:
            return None
        out["budget"] = "over the whole window: Prometheus's (fender slo rules)"
        return out


def _minus(now: Tally, before: Tally | None) -> Tally:
    """What was counted since `before`; never below 0 (a reload that removed an upstream
    forgets its answers)."""
    if before is None:
        return now
    return (max(0, now[0] - before[0]), max(0, now[1] - before[1]), max(0, now[2] - before[2]))


def _delta_heads(route: str, now: Snapshot, base: Snapshot | None) -> list[int]:
    counts = now.heads.get(route)
    if counts is None:
        return []
    if base is None or route not in base.heads:
        return counts
    old = base.heads[route]
    if base.buckets != now.buckets:  # a reload added a bucket since
        old = relayout(old, base.buckets, now.buckets)
    return [max(0, a - b) for a, b in zip(counts, old, strict=True)]


def quantile(q: float, bounds: Sequence[float], counts: Sequence[int]) -> float | None:
    """As PromQL's histogram_quantile: linear within the bucket; the highest finite bound
    when it falls in +Inf; None without observations."""
    total = sum(counts)
    if not total:
        return None
    rank, running = q * total, 0
    for i, count in enumerate(counts):
        if running + count >= rank and count:
            if i == len(bounds):
                return bounds[-1]
            lower = bounds[i - 1] if i else 0.0
            return lower + (bounds[i] - lower) * (rank - running) / count
        running += count
    return bounds[-1]


def _ms(seconds: float | None) -> float | None:
    return round(seconds * 1000, 3) if seconds is not None else None

"""Each SLO route's counts: the answers an objective judges, and those that missed it.

Nothing here runs per request. The counts are read, when scraped or when /status asks,
from the per-request counters of request_metrics.py:
- availability, from the answers by route, outcome and full status. Good: not a 5xx
  (relayed or Fender's own) and not outcome `failed` (which a stream cut short is); a
  fallback answer is good whatever its status. Not counted: a local 429 (outcome
  `rejected`, the app was told to wait) and a request the app gave up on before its
  answer (499, no answer to judge).
- latency, from the route's time-to-headers histogram: the answers in it, and those
  above the bucket of the threshold (exact, since the threshold is a bucket).
They are exported as `fender_slo_answers_total{route,slo}` and
`fender_slo_bad_answers_total{route,slo}`, with `fender_slo_objective{route,slo}`. The
rules `fender slo rules` prints read only these, never a bucket: a reload that changes
a threshold goes on counting from where the counters were, judged by the new threshold
from then on (`configure()` rebases them), so no Prometheus window ever mixes series of
different ages. An SLO that a reload adds starts at 0.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from .request_metrics import RequestMetrics

if TYPE_CHECKING:
    from ..config.model import Config
    from ..config.slo import Slo

AVAILABILITY, LATENCY = "availability", "latency"
Counts = dict[tuple[str, str], tuple[int, int]]  # (route, slo) -> (answers, bad)
CLIENT_CLOSED = 499  # the status of a request the app left before its answer


@dataclass(frozen=True)
class Objective:
    route: str
    slo: str  # availability or latency
    target: float
    threshold: float | None  # seconds, for latency
    window_h: int


def objectives(config: Config) -> list[Objective]:
    """Every objective of every route of a config, in the file's order."""
    out: list[Objective] = []
    for listener in config.listeners:
        for route in listener.routes:
            if route.slo is not None:
                out.extend(route_objectives(route.name, route.slo))
    return out


def route_objectives(route: str, slo: Slo) -> list[Objective]:
    out = []
    if slo.availability is not None:
        out.append(Objective(route, AVAILABILITY, slo.availability, None, slo.window))
    if slo.latency is not None:
        threshold = round(slo.latency.threshold, 6)
        out.append(Objective(route, LATENCY, slo.latency.target, threshold, slo.window))
    return out


def is_counted(outcome: str, status: int) -> bool:
    return status != CLIENT_CLOSED and (status != 429 or outcome != "rejected")


def is_bad(outcome: str, status: int) -> bool:
    return outcome == "failed" or (status >= 500 and outcome != "fallback")


class SloCounters:
    """The collector of the SLO families, and the counts /status reads."""

    def __init__(self, hot: RequestMetrics) -> None:
        self.hot = hot
        self.objectives: dict[tuple[str, str], Objective] = {}
        self._offsets: Counts = {}  # added to what is read, see configure()

    def configure(self, wanted: list[Objective]) -> None:
        """The objectives of the config swapped in: their thresholds become buckets; a
        new objective starts at 0, a changed threshold goes on from the counts so far."""
        with self.steady():
            self.hot.add_buckets([o.threshold for o in wanted if o.threshold is not None])
            self.objectives = {(o.route, o.slo): o for o in wanted}

    @contextmanager
    def steady(self) -> Iterator[None]:
        """Whatever the block does to the counters read (a reload forgetting an upstream's
        answers, a new threshold), the exported counts go on from where they were: a
        counter that went backwards would read as a reset, and as a burst of answers."""
        before = self.counts()
        yield
        raw = self._raw()
        offsets: Counts = {}
        for key in self.objectives:
            now = raw.get(key, (0, 0))
            was = before.get(key, (0, 0))  # 0 for an objective that was not there
            offsets[key] = (was[0] - now[0], was[1] - now[1])
        self._offsets = offsets

    def counts(self) -> Counts:
        """(answers, bad) of every objective, as exported."""
        out: Counts = {}
        for key, (answers, bad) in self._raw().items():
            offset = self._offsets.get(key, (0, 0))
            out[key] = (answers + offset[0], bad + offset[1])
        return out

    def _raw(self) -> Counts:
        routes = {route for route, slo in self.objectives if slo == AVAILABILITY}
        available: dict[str, list[int]] = {route: [0, 0] for route in routes}
        for (route, _, outcome, status), count in list(self.hot.answers.items()):
            if route in available and is_counted(outcome, status):
                tally = available[route]
                tally[0] += count
                if is_bad(outcome, status):
                    tally[1] += count
        out: Counts = {(route, AVAILABILITY): (t[0], t[1]) for route, t in available.items()}
        buckets = self.hot.buckets
        for (route, slo), objective in self.objectives.items():
            if slo != LATENCY or objective.threshold is None:
                continue
            histograms = self.hot.durations.get(route)
            heads = histograms[1] if histograms is not None else []
            within = bisect_left(buckets, objective.threshold) + 1  # slots up to its bucket
            total = sum(heads)
            out[(route, LATENCY)] = (total, total - sum(heads[:within]))
        return out

    # prometheus-client's collector interface.
    def describe(self) -> list[Metric]:
        return list(self._families({}))

    def collect(self) -> Iterator[Metric]:
        return self._families(self.counts())

    def _families(self, counts: Mapping[tuple[str, str], tuple[int, int]]) -> Iterator[Metric]:
        answers = CounterMetricFamily(
            "fender_slo_answers",
            "Answers a route's objective judges (slo: availability, latency); local 429s "
            "and requests the app gave up on are not counted.",
            labels=["route", "slo"],
        )
        bad = CounterMetricFamily(
            "fender_slo_bad_answers",
            "Of those, the answers that missed the objective: a 5xx, a failed or cut answer "
            "(availability); headers later than the threshold (latency).",
            labels=["route", "slo"],
        )
        objective = GaugeMetricFamily(
            "fender_slo_objective",
            "The share of answers that must be good, from the policy file (0.999).",
            labels=["route", "slo"],
        )
        for key, (total, missed) in counts.items():
            answers.add_metric(list(key), total)
            bad.add_metric(list(key), missed)
            objective.add_metric(list(key), self.objectives[key].target)
        yield answers
        yield bad
        yield objective

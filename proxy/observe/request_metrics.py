"""The per-request metrics: answers, their durations, and upstream attempts.

These three are touched by every request, so they are kept as plain numbers in dicts and
turned into Prometheus families only when scraped (a collector on Fender's registry).
A request costs a few dictionary updates and one bisect, not label validation and locks.
The series are the same as prometheus-client's Counter and Histogram would give.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Iterator, Sequence

from prometheus_client.core import CounterMetricFamily, HistogramMetricFamily, Metric

from .series import Kept

_CODE_CLASS = {1: "1xx", 2: "2xx", 3: "3xx", 4: "4xx", 5: "5xx"}

Answer = tuple[str, str, str, int]  # route, upstream, outcome, status // 100
Attempt = tuple[str, str, str]  # upstream, endpoint, result


class RequestMetrics:
    def __init__(self, buckets: Sequence[float]) -> None:
        self.buckets = tuple(buckets)
        self.answers: dict[Answer, int] = {}
        # route -> [count per bucket (the last one: +Inf)], and the sum of seconds
        self.durations: dict[str, tuple[list[int], list[float]]] = {}
        self.attempts: dict[Attempt, int] = {}

    def count_request(
        self, route: str, upstream: str, outcome: str, status: int, seconds: float
    ) -> None:
        key = (route, upstream, outcome, status // 100)
        answers = self.answers
        answers[key] = answers.get(key, 0) + 1
        histogram = self.durations.get(route)
        if histogram is None:
            histogram = self.durations[route] = ([0] * (len(self.buckets) + 1), [0.0])
        histogram[0][bisect_left(self.buckets, seconds)] += 1
        histogram[1][0] += seconds

    def count_attempt(self, upstream: str, endpoint: str, result: str) -> None:
        key = (upstream, endpoint, result)
        self.attempts[key] = self.attempts.get(key, 0) + 1

    def retain(self, kept: Kept) -> None:
        """Forget the series of routes, upstreams and endpoints a reload removed."""
        self.answers = {
            k: v for k, v in self.answers.items() if kept.keeps({"route": k[0], "upstream": k[1]})
        }
        self.durations = {k: v for k, v in self.durations.items() if kept.keeps({"route": k})}
        self.attempts = {
            k: v
            for k, v in self.attempts.items()
            if kept.keeps({"upstream": k[0], "endpoint": k[1]})
        }

    def outcomes_by_route(self) -> dict[str, dict[str, int]]:
        """Requests answered so far, by route and outcome (for GET /status)."""
        routes: dict[str, dict[str, int]] = {}
        for (route, _, outcome, _), count in list(self.answers.items()):
            outcomes = routes.setdefault(route, {})
            outcomes[outcome] = outcomes.get(outcome, 0) + count
        return routes

    # prometheus-client's collector interface.
    def describe(self) -> list[Metric]:
        return list(self._families(empty=True))

    def collect(self) -> Iterator[Metric]:
        return self._families(empty=False)

    def _families(self, *, empty: bool) -> Iterator[Metric]:
        answers = CounterMetricFamily(
            "fender_requests",
            "Requests answered to the app, by route, upstream, outcome and status class.",
            labels=["route", "upstream", "outcome", "code_class"],
        )
        durations = HistogramMetricFamily(
            "fender_request_duration_seconds",
            "Time from the request's arrival to the end of the answer, by route.",
            labels=["route"],
        )
        attempts = CounterMetricFamily(
            "fender_upstream_attempts",
            "Attempts sent to an upstream endpoint, by what came of them: response "
            "(headers arrived, any status) or the failure reason.",
            labels=["upstream", "endpoint", "result"],
        )
        if not empty:
            for (route, upstream, outcome, cls), count in list(self.answers.items()):
                code_class = _CODE_CLASS.get(cls, "other")
                answers.add_metric([route, upstream, outcome, code_class], count)
            bounds = [*map(_bound, self.buckets), "+Inf"]
            for route, (counts, total) in list(self.durations.items()):
                running, cumulative = 0, []
                for bound, count in zip(bounds, counts, strict=True):
                    running += count
                    cumulative.append((bound, running))
                durations.add_metric([route], cumulative, total[0])
            for (upstream, endpoint, result), count in list(self.attempts.items()):
                attempts.add_metric([upstream, endpoint, result], count)
        yield answers
        yield durations
        yield attempts


def _bound(value: float) -> str:
    return repr(float(value))

"""The per-request metrics: answers, their durations, and upstream attempts.

These are touched by every request, so they are kept as plain numbers in dicts and
turned into Prometheus families only when scraped (a collector on Fender's registry).
A request costs a few dictionary updates and two bisects, not label validation and locks.
The series are the same as prometheus-client's Counter and Histogram would give.

Two histograms per route share one entry: the whole answer (`request_duration`) and the
time to its response headers (`response_headers`, what latency objectives judge; a local
429 and a request the app left before its answer are not in it). Answers are kept by
full status, folded into classes when scraped, so that the SLO counts can tell a local
429 from other answers at no cost per request (observe/slo.py).

The buckets only grow: `add_buckets()` (an SLO's latency threshold) inserts a bound into
every route's histograms. What was counted in the interval it splits stays above it, so
a new bucket counts from its insertion on, and no series ever goes backwards.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Iterator, Sequence

from prometheus_client.core import CounterMetricFamily, HistogramMetricFamily, Metric

from .series import Kept

_CODE_CLASS = {1: "1xx", 2: "2xx", 3: "3xx", 4: "4xx", 5: "5xx"}

Answer = tuple[str, str, str, int]  # route, upstream, outcome, status
Attempt = tuple[str, str, str]  # upstream, endpoint, result
# Per route: counts per bucket (the last one: +Inf) of the whole answer and of the time
# to its headers, and the sums of seconds of both.
Histograms = tuple[list[int], list[int], list[float]]
NO_HEAD = -1.0  # `head` of an answer that is not in the time-to-headers histogram


class RequestMetrics:
    def __init__(self, buckets: Sequence[float]) -> None:
        # Floats: bisect compares a float with each, and a float with an int is slower.
        self.buckets = tuple(sorted({float(b) for b in buckets}))
        self.answers: dict[Answer, int] = {}
        self.durations: dict[str, Histograms] = {}
        self.attempts: dict[Attempt, int] = {}

    def count_request(
        self,
        route: str,
        upstream: str,
        outcome: str,
        status: int,
        seconds: float,
        head: float = NO_HEAD,
    ) -> None:
        """One answer: `seconds` to its end, `head` to its response headers (NO_HEAD when
        none went out)."""
        key = (route, upstream, outcome, status)
        answers = self.answers
        answers[key] = answers.get(key, 0) + 1
        histograms = self.durations.get(route)
        if histograms is None:
            slots = len(self.buckets) + 1
            histograms = self.durations[route] = ([0] * slots, [0] * slots, [0.0, 0.0])
        buckets = self.buckets
        histograms[0][bisect_left(buckets, seconds)] += 1
        sums = histograms[2]
        sums[0] += seconds
        if head >= 0.0 and (status != 429 or outcome != "rejected"):
            histograms[1][bisect_left(buckets, head)] += 1
            sums[1] += head

    def add_buckets(self, bounds: Sequence[float]) -> None:
        """Make each of `bounds` a bucket of every route's histograms (see the module
        docstring for what the new bucket counts)."""
        new = tuple(sorted(set(self.buckets).union(map(float, bounds))))
        if new == self.buckets:
            return
        for counts, heads, _ in self.durations.values():
            counts[:] = relayout(counts, self.buckets, new)
            heads[:] = relayout(heads, self.buckets, new)
        self.buckets = new

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
        heads = HistogramMetricFamily(
            "fender_response_headers_seconds",
            "Time from the request's arrival until its response headers went to the app, "
            "by route (what latency objectives judge; local 429s are left out).",
            labels=["route"],
        )
        attempts = CounterMetricFamily(
            "fender_upstream_attempts",
            "Attempts sent to an upstream endpoint, by what came of them: response "
            "(headers arrived, any status) or the failure reason.",
            labels=["upstream", "endpoint", "result"],
        )
        if not empty:
            by_class: dict[tuple[str, str, str, str], int] = {}
            for (route, upstream, outcome, status), count in list(self.answers.items()):
                key = (route, upstream, outcome, _CODE_CLASS.get(status // 100, "other"))
                by_class[key] = by_class.get(key, 0) + count
            for labels, count in by_class.items():
                answers.add_metric(list(labels), count)
            bounds = [*map(_bound, self.buckets), "+Inf"]
            for route, (counts, head_counts, sums) in list(self.durations.items()):
                durations.add_metric([route], _cumulative(bounds, counts), sums[0])
                heads.add_metric([route], _cumulative(bounds, head_counts), sums[1])
            for (upstream, endpoint, result), count in list(self.attempts.items()):
                attempts.add_metric([upstream, endpoint, result], count)
        yield answers
        yield durations
        yield heads
        yield attempts


def relayout(counts: Sequence[int], old: Sequence[float], new: Sequence[float]) -> list[int]:
    """Counts per bucket of bounds `old` laid out for bounds `new` (a superset): a new
    bound gets an empty bucket below it, and what its interval held stays above it."""
    kept = set(old)
    out: list[int] = []
    position = 0
    for bound in new:
        if bound in kept:
            out.append(counts[position])
            position += 1
        else:
            out.append(0)
    out.append(counts[position])  # +Inf
    return out


def _cumulative(bounds: Sequence[str], counts: Sequence[int]) -> list[tuple[str, float]]:
    running, cumulative = 0, list[tuple[str, float]]()
    for bound, count in zip(bounds, counts, strict=True):
        running += count
        cumulative.append((bound, running))
    return cumulative


def _bound(value: float) -> str:
    return repr(float(value))

"""Every collector Fender exports, on a private registry, declared in this one place.

Labels are config names (route, upstream, endpoint) and small fixed vocabularies
(outcome, result, code class), never raw paths: the series count is bounded by the file,
and a reload removes the series of the names it removed (`retain()`, see series.py).
The hot path goes through `count_request()` and `count_attempt()`, plain counters of
request_metrics.py; the rest cache their labelled children.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
    generate_latest,
)

from .request_metrics import RequestMetrics
from .series import NO_ROUTE, SCOPED, Kept, gone
from .slo import SloCounters

__all__ = ["NO_ROUTE", "Metrics"]

DURATION_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)
_CODE_CLASS = {1: "1xx", 2: "2xx", 3: "3xx", 4: "4xx", 5: "5xx"}


class Metrics:
    def __init__(self) -> None:
        # `*_created` series double the series count and no dashboard uses them. The switch
        # is process-wide in prometheus-client; Fender has no other registry.
        disable_created_metrics()  # type: ignore[no-untyped-call]
        self.registry = CollectorRegistry(auto_describe=True)
        # Collectors with a label that names a route, an upstream or an endpoint.
        self._scoped: dict[Any, tuple[str, ...]] = {}
        # Touched by every request: plain numbers, made into families when scraped.
        self.hot = RequestMetrics(DURATION_BUCKETS)
        self.registry.register(self.hot)
        self.count_request = self.hot.count_request
        self.count_attempt = self.hot.count_attempt
        # Each SLO route's good and bad answers, read from `hot` when scraped.
        self.slo = SloCounters(self.hot)
        self.registry.register(self.slo)
        self.retries: Counter = self._new(
            Counter,
            "fender_retries_total",
            "Retries decided, by route and the condition retried (reason or status).",
            ["route", "reason"],
        )
        self.retry_budget_exhausted: Counter = self._new(
            Counter,
            "fender_retry_budget_exhausted_total",
            "Retries not made because the route's retry budget was spent.",
            ["route"],
        )
        self.retry_skipped: Counter = self._new(
            Counter,
            "fender_retry_skipped_total",
            "Retries not made for another reason: not_idempotent, body_too_large (the body "
            "streamed through unbuffered), deadline, retry_after_too_long.",
            ["route", "reason"],
        )
        self.circuit_state: Gauge = self._new(
            Gauge,
            "fender_circuit_state",
            "Circuit breaker state per upstream: 0 closed, 1 half_open, 2 open.",
            ["upstream"],
        )
        self.circuit_transitions: Counter = self._new(
            Counter,
            "fender_circuit_transitions_total",
            "Circuit breaker state changes.",
            ["upstream", "from", "to"],
        )
        self.rejections: Counter = self._new(
            Counter,
            "fender_rejections_total",
            "Requests or attempts answered locally, by route and reason (circuit_open, "
            "rate_limited, bulkhead_full).",
            ["route", "reason"],
        )
        self.fallbacks: Counter = self._new(
            Counter,
            "fender_fallbacks_total",
            "Answers given by a fallback step, by route and kind (upstream, stale, static).",
            ["route", "kind"],
        )
        self.bulkhead_in_flight: Gauge = self._new(
            Gauge,
            "fender_bulkhead_in_flight",
            "Attempts holding a bulkhead slot.",
            ["upstream"],
        )
        self.bulkhead_queued: Gauge = self._new(
            Gauge,
            "fender_bulkhead_queued",
            "Attempts waiting for a bulkhead slot.",
            ["upstream"],
        )
        self.rate_limit_waits: Histogram = self._new(
            Histogram,
            "fender_rate_limit_waits_seconds",
            "Time spent waiting for a rate-limit token or a cool-down, by scope "
            "(route:NAME or upstream:NAME).",
            ["scope"],
            buckets=(0.001, 0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
        )
        self.upstream_healthy: Gauge = self._new(
            Gauge,
            "fender_upstream_healthy",
            "1 while an endpoint may take traffic (healthy and not ejected), else 0.",
            ["upstream", "endpoint"],
        )
        self.degradation_level: Gauge = self._new(
            Gauge,
            "fender_degradation_level",
            "0 full, 1 degraded, 2 limited, 3 emergency.",
        )
        self.config_reloads: Counter = self._new(
            Counter,
            "fender_config_reloads_total",
            "Reloads of the policy file, by result (success, failure: the old one kept).",
            ["result"],
        )
        self.config_info: Gauge = self._new(
            Gauge,
            "fender_config_info",
            "1 for the hash of the policy file that runs.",
            ["hash"],
        )
        self.log_lines_dropped: Counter = self._new(
            Counter,
            "fender_log_lines_dropped_total",
            "Log lines dropped because stdout did not take them fast enough (the buffer of "
            "lines waiting to be written, log.buffer, was full).",
        )
        self.tunnels_open: Gauge = self._new(
            Gauge, "fender_tunnels_open", "Upgrade tunnels (WebSocket) open now.", ["route"]
        )
        self.tunnel_bytes: Counter = self._new(
            Counter,
            "fender_tunnel_bytes_total",
            "Bytes relayed through Upgrade tunnels, by direction (upstream: from the app to "
            "the upstream; downstream: back).",
            ["route", "direction"],
        )
        # The fleet (redis:): see proxy/fleet/.
        self.redis_up: Gauge = self._new(
            Gauge,
            "fender_redis_up",
            "1 while the fleet's Redis answers (its link is up), else 0 (and without redis:).",
        )
        self.fleet_replicas: Gauge = self._new(
            Gauge,
            "fender_fleet_replicas",
            "Live replicas of the fleet, this one included, as last counted by heartbeats.",
        )
        self.rate_limit_fallbacks: Counter = self._new(
            Counter,
            "fender_rate_limit_fallbacks_total",
            "Decisions of global rate limits made locally (rate / live replicas) because "
            "Redis did not answer within redis.timeout or is down, by scope.",
            ["scope"],
        )
        # Durable queues (delivery/): read from each queue's numbers, refreshed once a second.
        self.queue_depth: Gauge = self._new(
            Gauge,
            "fender_queue_depth",
            "Messages waiting in a queue, deliveries in flight included (dead letters not).",
            ["queue"],
        )
        self.queue_oldest: Gauge = self._new(
            Gauge,
            "fender_queue_oldest_seconds",
            "Age of the oldest message waiting in a queue (0 when none waits).",
            ["queue"],
        )
        self.queue_dead: Gauge = self._new(
            Gauge, "fender_queue_dead", "Dead letters kept for a queue.", ["queue"]
        )
        self.deliveries: Counter = self._new(
            Counter,
            "fender_deliveries_total",
            "Deliveries of queued messages, by result: delivered, retried (again later), "
            "dead (a dead letter: a final answer, or out of attempts), expired (past max_age).",
            ["queue", "result"],
        )
        self.queue_accepts: Counter = self._new(
            Counter,
            "fender_queue_accepts_total",
            "Requests a delivery route was given, by result: accepted (202), duplicate (an "
            "idempotency key seen before: 202 with the first id), full, unavailable (503), "
            "too_large (413).",
            ["queue", "result"],
        )
        self._children: dict[tuple[Any, ...], Any] = {}
        self._deferred: list[tuple[Any, tuple[str, ...]]] | None = None
        for result in ("success", "failure"):
            self.zero(self.config_reloads, result)

    @contextmanager
    def deferred(self) -> Iterator[list[tuple[Any, tuple[str, ...]]]]:
        """Within this block, `zero()` notes its series in the list instead of exporting
        them; `zero_all()` exports them later (a reload that fails exports nothing)."""
        pending: list[tuple[Any, tuple[str, ...]]] = []
        self._deferred = pending
        try:
            yield pending
        finally:
            self._deferred = None

    def zero_all(self, pending: Sequence[tuple[Any, tuple[str, ...]]]) -> None:
        for metric, labels in pending:
            self.zero(metric, *labels)

    def _new(self, kind: Any, name: str, doc: str, labels: Sequence[str] = (), **kw: Any) -> Any:
        metric = kind(name, doc, list(labels), registry=self.registry, **kw)
        if SCOPED.intersection(labels):
            self._scoped[metric] = tuple(labels)
        return metric

    def retain(self, kept: Kept) -> None:
        """Remove every series that names a route, upstream or endpoint `kept` drops."""
        for metric, names in self._scoped.items():
            for values in list(gone(metric, names, kept)):
                metric.remove(*values)
        self._children = {k: v for k, v in self._children.items() if self._lives(k, kept)}
        with self.slo.steady():
            self.hot.retain(kept)

    def _lives(self, key: tuple[Any, ...], kept: Kept) -> bool:
        names = self._scoped.get(key[0])
        return names is None or kept.keeps(dict(zip(names, key[1:], strict=True)))

    def zero(self, metric: Any, *labels: str) -> None:
        """Export a series at 0 before its first event. PromQL's `increase()` needs a
        sample from before an event to see it, so without this the first fallback, reload
        failure or spent budget of a process would never fire the alerts built on them.
        (While a generation is built, the series are only noted: see `deferred()`.)"""
        if self._deferred is not None:
            self._deferred.append((metric, labels))
            return
        key = (metric, *labels)
        if key not in self._children:
            self._children[key] = metric.labels(*labels)

    def _inc(self, metric: Any, *labels: str) -> None:
        key = (metric, *labels)
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = metric.labels(*labels)
        child.inc()

    def count_retry(self, route: str, reason: str) -> None:
        self._inc(self.retries, route, reason)

    def count_retry_skipped(self, route: str, reason: str) -> None:
        self._inc(self.retry_skipped, route, reason)

    def count_budget_exhausted(self, route: str) -> None:
        self._inc(self.retry_budget_exhausted, route)

    def count_rejection(self, route: str, reason: str) -> None:
        self._inc(self.rejections, route, reason)

    def count_fallback(self, route: str, kind: str) -> None:
        self._inc(self.fallbacks, route, kind)

    def count_transition(self, upstream: str, was: str, to: str) -> None:
        self._inc(self.circuit_transitions, upstream, was, to)

    def count_rate_limit_fallback(self, scope: str) -> None:
        self._inc(self.rate_limit_fallbacks, scope)

    def count_delivery(self, queue: str, result: str) -> None:
        self._inc(self.deliveries, queue, result)

    def count_queue_accept(self, queue: str, result: str) -> None:
        self._inc(self.queue_accepts, queue, result)

    def observe_rate_limit_wait(self, scope: str, seconds: float) -> None:
        self.rate_limit_waits.labels(scope).observe(seconds)

    def tunnel(self, route: str) -> TunnelStats:
        return TunnelStats(
            self.tunnels_open.labels(route),
            self.tunnel_bytes.labels(route, "upstream"),
            self.tunnel_bytes.labels(route, "downstream"),
        )

    def count_log_drops(self, lines: int) -> None:
        self.log_lines_dropped.inc(lines)

    def count_reload(self, result: str) -> None:
        self._inc(self.config_reloads, result)

    def set_config(self, config_hash: str) -> None:
        self.config_info.clear()
        self.config_info.labels(config_hash).set(1)

    def render(self) -> bytes:
        return generate_latest(self.registry)


class TunnelStats:
    """One tunnel's share of the tunnel metrics."""

    __slots__ = ("down", "open", "up")

    def __init__(self, open_: Any, up: Any, down: Any) -> None:
        self.open, self.up, self.down = open_, up, down

    def opened(self) -> None:
        self.open.inc()

    def closed(self, sent_up: int, sent_down: int) -> None:
        self.open.dec()
        self.up.inc(sent_up)
        self.down.inc(sent_down)

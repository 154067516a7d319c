"""What GET /status shows, and what the degradation level is derived from.

Read when asked, or once a second by `watch()`: nothing here runs per request. Route
outcomes over the last minute are the difference from a snapshot of the counters taken
about a minute ago (one every ten seconds).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from typing import Any

from ..generation import Generation
from ..observe.metrics import Metrics
from ..state.breaker import OPEN
from ..state.clock import Clock
from ..state.degradation import Degradation
from ..state.faults import Faults

DEGRADATION_EVERY = 1.0  # seconds between looks at the degradation level
SNAPSHOT_EVERY = 10.0  # seconds between snapshots of route outcomes
RECENT = 60.0  # what /status calls recent

Outcomes = dict[str, dict[str, int]]  # route -> outcome -> count


class StatusBoard:
    def __init__(
        self, metrics: Metrics, clock: Clock, degradation: Degradation, faults: Faults
    ) -> None:
        self.metrics = metrics
        self.clock = clock
        self.degradation = degradation
        self.faults = faults
        window = int(RECENT / SNAPSHOT_EVERY) + 2
        self.snapshots: deque[tuple[float, Outcomes]] = deque(maxlen=window)

    def status(self, gen: Generation) -> dict[str, Any]:
        self.degradation.evaluate(self.downs(gen))
        return {
            "config_hash": gen.config.hash,
            "upstreams": {name: _upstream(gen, name) for name in gen.upstreams},
            "routes": self.route_outcomes(),
            "faults": self.faults.view(),
            "degradation": self.degradation.status(),
            "fleet": gen.fleet.status() if gen.fleet is not None else None,
        }

    def downs(self, gen: Generation) -> dict[str, str]:
        """The upstreams that are down (circuit open, or no usable endpoint): priorities."""
        out: dict[str, str] = {}
        for name, upstream in gen.upstreams.items():
            breaker, health = gen.guards[name].breaker, upstream.health
            is_open = breaker is not None and breaker.current() == OPEN
            no_endpoint = health is not None and not any(
                health.usable(e.label) for e in upstream.endpoints
            )
            if is_open or no_endpoint:
                out[name] = upstream.config.priority
        return out

    def route_outcomes(self) -> dict[str, dict[str, dict[str, int]]]:
        """Per route: outcomes since start, and over about the last minute."""
        now, totals = self.clock.monotonic(), outcomes_by_route(self.metrics)
        past: Outcomes = {}
        for taken, snapshot in self.snapshots:
            if now - taken <= RECENT + SNAPSHOT_EVERY:
                past = snapshot
                break
        out: dict[str, dict[str, dict[str, int]]] = {}
        for route, outcomes in totals.items():
            before = past.get(route, {})
            recent = {k: v - before.get(k, 0) for k, v in outcomes.items() if v > before.get(k, 0)}
            out[route] = {"total": outcomes, "last_minute": recent}
        return out

    def snapshot(self) -> None:
        self.snapshots.append((self.clock.monotonic(), outcomes_by_route(self.metrics)))

    async def watch(self, generation: Callable[[], Generation]) -> None:
        """Every second: the degradation level; every ten: a snapshot of route outcomes."""
        ticks = 0
        while True:
            self.degradation.evaluate(self.downs(generation()))
            if ticks % int(SNAPSHOT_EVERY / DEGRADATION_EVERY) == 0:
                self.snapshot()
            ticks += 1
            await self.clock.sleep(DEGRADATION_EVERY)


def outcomes_by_route(metrics: Metrics) -> Outcomes:
    """Requests answered so far, by route and outcome, read from the counter."""
    return metrics.hot.outcomes_by_route()


def _upstream(gen: Generation, name: str) -> dict[str, Any]:
    upstream, guards = gen.upstreams[name], gen.guards[name]
    bulkhead, quota = guards.bulkhead, guards.quota
    return {
        "endpoints": upstream.endpoint_status(),
        "breaker": guards.breaker.status() if guards.breaker else None,
        "bulkhead": {
            "in_flight": bulkhead.in_flight,
            "queued": bulkhead.queued,
            "max_concurrent": bulkhead.max_concurrent,
        }
        if bulkhead
        else None,
        "quota": {
            "paused_for_s": round(quota.pause_left(), 3),
            "tokens": quota.bucket.remaining() if quota.bucket else None,
        }
        if quota
        else None,
    }

"""What GET /status shows, and what the degradation level is derived from.

Read when asked, or once a second by `watch()`: nothing here runs per request. Route
figures over a recent window are differences from snapshots of the counters (recent.py).
The last events come from a ring the log feeds (observe/events.py). Other parts of Fender
add sections of their own (queues, the fleet) with `add_section()`: each is shown under
its name, and the status page and `fender status` show it as a table.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ..generation import Generation
from ..observe.events import EventRing
from ..observe.metrics import Metrics
from ..state.breaker import OPEN
from ..state.clock import Clock
from ..state.degradation import Degradation
from ..state.faults import Faults
from .recent import FINE_EVERY, Recent

DEGRADATION_EVERY = 1.0  # seconds between looks at the degradation level
SNAPSHOT_EVERY = FINE_EVERY  # seconds between snapshots of the counters
# A section of another part of Fender: rows by name, each a flat mapping (a table).
SectionView = Callable[[], dict[str, dict[str, Any]]]


class StatusBoard:
    def __init__(
        self, metrics: Metrics, clock: Clock, degradation: Degradation, faults: Faults
    ) -> None:
        self.metrics = metrics
        self.clock = clock
        self.degradation = degradation
        self.faults = faults
        self.recent = Recent(clock)
        self.events = EventRing(clock)
        self.sections: dict[str, SectionView] = {}

    def add_section(self, name: str, view: SectionView) -> None:
        """Show `view()` under `name` in /status (and as a table on the status page and in
        `fender status`): for queues, the fleet, whatever else keeps state worth seeing."""
        self.sections[name] = view

    def status(self, gen: Generation) -> dict[str, Any]:
        self.degradation.evaluate(self.downs(gen))
        names = [route.name for listener in gen.config.listeners for route in listener.routes]
        return {
            "config_hash": gen.config.hash,
            "time": self.clock.wall(),
            "upstreams": {name: _upstream(gen, name) for name in gen.upstreams},
            "routes": self.recent.routes(self.metrics, names),
            "faults": self.faults.view(),
            "degradation": self.degradation.status(),
            "fleet": gen.fleet.status() if gen.fleet is not None else None,
            "events": self.events.view(),
            "sections": list(self.sections),
            **{name: view() for name, view in self.sections.items()},
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
        """Per route that answered: outcomes since start, and over about the last minute."""
        view = self.recent.routes(self.metrics, [])
        return {r: {"total": v["total"], "last_minute": v["last_minute"]} for r, v in view.items()}

    def snapshot(self) -> None:
        self.recent.snapshot(self.metrics)

    async def watch(self, generation: Callable[[], Generation]) -> None:
        """Every second: the degradation level; every five: a snapshot of the counters."""
        ticks = 0
        while True:
            self.degradation.evaluate(self.downs(generation()))
            if ticks % int(SNAPSHOT_EVERY / DEGRADATION_EVERY) == 0:
                self.snapshot()
            ticks += 1
            await self.clock.sleep(DEGRADATION_EVERY)


def _upstream(gen: Generation, name: str) -> dict[str, Any]:
    upstream, guards = gen.upstreams[name], gen.guards[name]
    bulkhead, quota = guards.bulkhead, guards.quota
    return {
        "priority": upstream.config.priority,
        "endpoints": upstream.endpoint_status(),
        "breaker": guards.breaker.status() if guards.breaker else None,
        "bulkhead": {
            "in_flight": bulkhead.in_flight,
            "queued": bulkhead.queued,
            "max_concurrent": bulkhead.max_concurrent,
            "max_queued": bulkhead.max_queued,
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

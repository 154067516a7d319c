"""Which endpoints of an upstream may take traffic: active checks and passive ejection.

Active: every `interval`, each endpoint is asked `path`; `unhealthy` failed checks in a
row take it out, `healthy` passed ones bring it back. Passive: `consecutive_failures`
real attempts failing in a row eject it for `ejection` (doubled on each ejection in a
row, up to `max_ejection`), never more than `max_ejected` of the endpoints at once.
Endpoint choice skips what is out; when everything is out it tries them all anyway.
Neither ever touches Fender's own readiness.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

from ..config.upstream import HealthCheck, Outlier
from ..observe.logs import JsonLog
from .classify import Conditions
from .clock import Clock

Probe = Callable[[str], Awaitable[int | None]]  # endpoint base -> status, None: no answer


@dataclass
class EndpointHealth:
    checked_ok: bool = True  # by active checks
    passes: int = 0
    fails: int = 0
    failures: int = 0  # real attempts failing in a row
    ejected_until: float = 0.0
    ejections: int = 0


class Health:
    def __init__(
        self,
        upstream: str,
        endpoints: Sequence[str],
        check: HealthCheck | None,
        outlier: Outlier | None,
        clock: Clock,
        log: JsonLog,
    ) -> None:
        self.upstream = upstream
        self.check = check
        self.outlier = outlier
        self.clock = clock
        self.log = log
        self.states = {endpoint: EndpointHealth() for endpoint in endpoints}
        self.expect = Conditions(check.expect_status) if check else None
        max_out = math.floor(len(endpoints) * outlier.max_ejected) if outlier else 0
        self.max_ejected = min(max_out, len(endpoints) - 1)

    def usable(self, endpoint: str) -> bool:
        state = self.states[endpoint]
        return state.checked_ok and self.clock.monotonic() >= state.ejected_until

    def record(self, endpoint: str, failure: bool) -> None:
        """A real attempt's verdict (passive ejection)."""
        outlier = self.outlier
        if outlier is None:
            return
        state = self.states[endpoint]
        if not failure:
            state.failures = 0
            return
        state.failures += 1
        if state.failures < outlier.consecutive_failures:
            return
        now = self.clock.monotonic()
        ejected = sum(1 for s in self.states.values() if s.ejected_until > now)
        if ejected >= self.max_ejected or state.ejected_until > now:
            return
        state.ejections += 1
        growth = 2 ** min(state.ejections - 1, 20)
        state.ejected_until = now + min(outlier.max_ejection, outlier.ejection * growth)
        state.failures = 0
        self.log.event("endpoint_ejected", "warning", upstream=self.upstream, endpoint=endpoint)

    def checked(self, endpoint: str, status: int | None) -> None:
        """One active check's result."""
        assert self.check is not None and self.expect is not None
        state = self.states[endpoint]
        passed = status is not None and self.expect.matches_status(status)
        state.passes, state.fails = (state.passes + 1, 0) if passed else (0, state.fails + 1)
        if state.checked_ok and state.fails >= self.check.unhealthy:
            state.checked_ok = False
            self.log.event(
                "endpoint_unhealthy", "warning", upstream=self.upstream, endpoint=endpoint
            )
        elif not state.checked_ok and state.passes >= self.check.healthy:
            state.checked_ok = True
            state.ejected_until = 0.0
            self.log.event("endpoint_healthy", upstream=self.upstream, endpoint=endpoint)

    async def run_checks(self, probe: Probe) -> None:
        """Check every endpoint each interval, until cancelled."""
        assert self.check is not None
        while True:
            endpoints = list(self.states)
            results = await asyncio.gather(*(probe(e) for e in endpoints))
            for endpoint, status in zip(endpoints, results, strict=True):
                self.checked(endpoint, status)
            await self.clock.sleep(self.check.interval)

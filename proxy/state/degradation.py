"""The degradation level: how much of what Fender fronts is down, in one word.

An upstream is down when its circuit is open (an open circuit whose `open_for` has passed
is ready to probe: not down) or none of its endpoints may take traffic.
The level is the worst that any down upstream brings, by its priority:

    critical -> emergency,  high -> limited,  normal or low -> degraded;  none down -> full

A route with `shed_at: LEVEL` sends its requests straight to its fallback at that level
or worse, without calling its upstream, to leave room for what matters more. An operator
can set the level by hand for a while (`POST /degradation` with a ttl), for planned work.
The level is looked at every second and logged when it changes.
"""

from __future__ import annotations

from collections.abc import Mapping

from ..observe.logs import JsonLog
from .clock import Clock

LEVELS = ("full", "degraded", "limited", "emergency")
BY_PRIORITY = {"critical": 3, "high": 2, "normal": 1, "low": 1}


class Degradation:
    def __init__(self, clock: Clock, log: JsonLog) -> None:
        self.clock = clock
        self.log = log
        self.derived = 0
        self.level = 0  # what routes act on: the override while it lasts, else derived
        self.override: tuple[int, float] | None = None  # (level, until)

    def evaluate(self, downs: Mapping[str, str]) -> int:
        """Recompute from the down upstreams (name -> priority); returns the level."""
        self.derived = max((BY_PRIORITY[p] for p in downs.values()), default=0)
        level = self.derived
        if self.override is not None:
            forced, until = self.override
            if self.clock.monotonic() < until:
                level = forced
            else:
                self.override = None
        self._become(
            level, "set by hand" if self.override else ", ".join(sorted(downs)) or "all up"
        )
        return level

    def current(self) -> int:
        """The level routes act on; a hand-set level ends exactly at its ttl."""
        if self.override is not None and self.clock.monotonic() >= self.override[1]:
            self.override = None
            self._become(self.derived, "the hand-set level expired")
        return self.level

    def _become(self, level: int, why: str) -> None:
        if level != self.level:
            was, self.level = self.level, level
            severity = "warning" if level else "info"
            self.log.event("degradation", severity, was=LEVELS[was], to=LEVELS[level], why=why)

    def set_by_hand(self, level: str | None, ttl: float, downs: Mapping[str, str]) -> None:
        until = self.clock.monotonic() + ttl
        self.override = None if level is None else (LEVELS.index(level), until)
        self.evaluate(downs)

    def status(self) -> dict[str, object]:
        override = None
        if self.override is not None:
            level, until = self.override
            left = round(until - self.clock.monotonic(), 3)
            override = {"level": LEVELS[level], "expires_in_s": left}
        return {"level": LEVELS[self.level], "derived": LEVELS[self.derived], "override": override}

"""Shed: a route's `shed_at`, the degradation level at which its requests go straight
to its fallback, without calling its upstream (state/degradation.py says how the level
is derived)."""

from __future__ import annotations

from collections.abc import Callable

from ..http.message import Call, Handler, Rejected, Reply
from ..state.degradation import LEVELS


class Shed:
    """A route's `shed_at`: at that level or worse, straight to the fallback.

    Except a call that its own upstream's breaker would take as a probe (`probe_wanted`):
    when the route's own upstream is what brought the level down, shedding every call
    would keep its circuit from ever being probed, and the level from ever falling.
    """

    def __init__(
        self, at: str, level: Callable[[], int], probe_wanted: Callable[[], bool] | None = None
    ) -> None:
        self.at = LEVELS.index(at)
        self.level = level
        self.probe_wanted = probe_wanted

    async def __call__(self, call: Call, call_next: Handler) -> Reply:
        level = self.level()
        if level >= self.at and not (self.probe_wanted is not None and self.probe_wanted()):
            detail = f"shed at degradation level {LEVELS[level]}"
            raise Rejected("shed", detail, retry_after=10)
        return await call_next(call)

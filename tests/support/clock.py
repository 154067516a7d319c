"""A fake clock for unit tests: time moves only when the code under test sleeps."""

from __future__ import annotations

import asyncio
from collections.abc import Callable


class FakeClock:
    def __init__(self, start: float = 1000.0, wall: float = 1_800_000_000.0) -> None:
        self.now = start
        self.wall_offset = wall - start
        self.sleeps: list[float] = []
        self.timers: list[Timer] = []

    def monotonic(self) -> float:
        return self.now

    def wall(self) -> float:
        return self.now + self.wall_offset

    def advance(self, seconds: float) -> None:
        self.now += seconds
        self._fire()

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds
        self._fire()
        await asyncio.sleep(0)

    def call_later(self, seconds: float, callback: Callable[[], None]) -> Timer:
        timer = Timer(self.now + seconds, callback)
        self.timers.append(timer)
        return timer

    def _fire(self) -> None:
        due = [t for t in self.timers if t.when <= self.now]
        self.timers = [t for t in self.timers if t.when > self.now]
        for timer in due:
            if not timer.cancelled:
                timer.callback()


class Timer:
    def __init__(self, when: float, callback: Callable[[], None]) -> None:
        self.when = when
        self.callback = callback
        self.cancelled = False

    def cancel(self) -> None:
        self.cancelled = True

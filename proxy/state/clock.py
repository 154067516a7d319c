"""Time as a parameter: the real clock here; tests pass a fake one that they advance."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Protocol


class Cancellable(Protocol):
    def cancel(self) -> None: ...


class Clock(Protocol):
    def monotonic(self) -> float: ...

    def wall(self) -> float:
        """Unix time, for HTTP dates."""
        ...

    async def sleep(self, seconds: float) -> None: ...

    def call_later(self, seconds: float, callback: Callable[[], None]) -> Cancellable:
        """Run `callback` after `seconds`. (Not `asyncio.timeout`: a request's pipeline
        runs without a Task of its own, see http/pending.py.)"""
        ...


class RealClock:
    # time.monotonic itself, not a method around it: read a few times per request, and a
    # Python frame costs more than the clock.
    monotonic = staticmethod(time.monotonic)

    def wall(self) -> float:
        return time.time()

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds)

    def call_later(self, seconds: float, callback: Callable[[], None]) -> Cancellable:
        return asyncio.get_running_loop().call_later(max(0.0, seconds), callback)

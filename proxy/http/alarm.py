"""One lazy timer per connection: moving a deadline later costs nothing.

Each connection has a single deadline at a time (the response head is due, the next body
chunk is due, an idle keep-alive expires). Setting it stores a number; the loop timer is
replaced only when the new deadline is earlier than the one armed. When the timer rings
early (the deadline moved on since), it re-arms itself for the new one. So a keep-alive
connection serving thousands of requests arms a timer about once per timeout period,
rather than creating and cancelling one per request.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

# The loop's clock ticks in milliseconds: a deadline this close is due now (rather than
# re-armed for a fraction of a tick).
_EARLY = 0.0005


class Alarm:
    __slots__ = ("_armed", "_due", "_handle", "_loop", "_ring")

    def __init__(self, loop: asyncio.AbstractEventLoop, ring: Callable[[], None]) -> None:
        self._loop = loop
        self._ring = ring
        self._handle: asyncio.TimerHandle | None = None
        self._armed = 0.0  # loop time the handle rings at
        self._due: float | None = None  # loop time of the deadline; None: none

    def set(self, due: float) -> None:
        """Ring at loop time `due` (replacing the deadline before it)."""
        self._due = due
        if self._handle is None:
            self._armed = due
            self._handle = self._loop.call_at(due, self._rang)
        elif due < self._armed:
            self._handle.cancel()
            self._armed = due
            self._handle = self._loop.call_at(due, self._rang)

    def clear(self) -> None:
        """No deadline; the armed handle, if any, rings into nothing."""
        self._due = None

    def cancel(self) -> None:
        """No deadline, and no handle left behind (the connection is gone)."""
        self._due = None
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None

    def _rang(self) -> None:
        self._handle = None
        due = self._due
        if due is None:
            return
        if due > self._loop.time() + _EARLY:
            self._armed = due
            self._handle = self._loop.call_at(due, self._rang)
            return
        self._due = None
        self._ring()

"""Counts over a sliding time window, kept in a fixed ring of buckets.

Used by the retry budget (requests and retries) and the circuit breaker (calls and
failures, calls and slow calls). Adding is O(1); totals are a sum over the ring.
"""

from __future__ import annotations

from .clock import Clock

BUCKETS = 10


class SlidingCounts:
    """Two counters, `total` and `hits`, over the last `window` seconds."""

    def __init__(self, window: float, clock: Clock) -> None:
        self.width = window / BUCKETS
        self.clock = clock
        self._epochs = [-1] * BUCKETS
        self._totals = [0] * BUCKETS
        self._hits = [0] * BUCKETS

    def _slot(self, now: float | None = None) -> tuple[int, int]:
        epoch = int((self.clock.monotonic() if now is None else now) / self.width)
        slot = epoch % BUCKETS
        if self._epochs[slot] != epoch:  # a bucket that slid out of the window: reuse it
            self._epochs[slot] = epoch
            self._totals[slot] = 0
            self._hits[slot] = 0
        return slot, epoch

    def add(self, total: int = 0, hits: int = 0, now: float | None = None) -> None:
        # _slot(), inlined: this runs for every request.
        epoch = int((self.clock.monotonic() if now is None else now) / self.width)
        slot = epoch % BUCKETS
        if self._epochs[slot] != epoch:
            self._epochs[slot] = epoch
            self._totals[slot] = total
            self._hits[slot] = hits
        else:
            self._totals[slot] += total
            self._hits[slot] += hits

    def counts(self) -> tuple[int, int]:
        """(total, hits) over the window."""
        _, now = self._slot()
        total = hits = 0
        for slot in range(BUCKETS):
            if now - self._epochs[slot] < BUCKETS:
                total += self._totals[slot]
                hits += self._hits[slot]
        return total, hits

    def clear(self) -> None:
        self._epochs = [-1] * BUCKETS

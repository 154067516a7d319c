"""The retry budget: retries may be at most `ratio` of the requests in a sliding window,
plus `min_per_second` (so that a quiet route can still retry).

Counted in one-second-ish buckets over the window. A retry is counted when it is decided,
before its backoff, so retries still waiting count against the budget too.
"""

from __future__ import annotations

from ..clock import Clock
from ..config_policy import Budget

BUCKETS = 10


class RetryBudget:
    def __init__(self, config: Budget, clock: Clock) -> None:
        self.ratio = config.ratio
        self.floor = config.min_per_second * config.window
        self.width = config.window / BUCKETS
        self.clock = clock
        self._epochs = [-1] * BUCKETS
        self._requests = [0] * BUCKETS
        self._retries = [0] * BUCKETS

    def _slot(self) -> int:
        epoch = int(self.clock.monotonic() / self.width)
        slot = epoch % BUCKETS
        if self._epochs[slot] != epoch:  # a bucket that slid out of the window: reuse it
            self._epochs[slot] = epoch
            self._requests[slot] = 0
            self._retries[slot] = 0
        return slot

    def record_request(self) -> None:
        self._requests[self._slot()] += 1

    def _totals(self, now_epoch: int) -> tuple[int, int]:
        requests = retries = 0
        for slot in range(BUCKETS):
            if now_epoch - self._epochs[slot] < BUCKETS:
                requests += self._requests[slot]
                retries += self._retries[slot]
        return requests, retries

    def try_spend(self) -> bool:
        """Take one retry from the budget; False when it is spent."""
        slot = self._slot()
        requests, retries = self._totals(self._epochs[slot])
        if retries + 1 > self.ratio * requests + self.floor:
            return False
        self._retries[slot] += 1
        return True

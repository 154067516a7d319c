"""The retry budget: retries may be at most `ratio` of the requests in a sliding window,
plus `min_per_second` (so that a quiet route can still retry).

A retry is counted when it is decided, before its backoff, so retries still waiting count
against the budget too.
"""

from __future__ import annotations

from ..config.policy import Budget
from .clock import Clock
from .window import SlidingCounts


class RetryBudget:
    def __init__(self, config: Budget, clock: Clock) -> None:
        self.ratio = config.ratio
        self.floor = config.min_per_second * config.window
        self.counts = SlidingCounts(config.window, clock)  # total: requests, hits: retries

    def record_request(self, now: float | None = None) -> None:
        self.counts.add(1, 0, now)

    def try_spend(self) -> bool:
        """Take one retry from the budget; False when it is spent."""
        requests, retries = self.counts.counts()
        if retries + 1 > self.ratio * requests + self.floor:
            return False
        self.counts.add(hits=1)
        return True

"""Token buckets: `rate` tokens a second, up to `burst`, handed out first come first served.

A caller reserves a token and is told how long to wait for it: tokens may go below zero,
each reservation standing in line behind the earlier ones (virtual scheduling). So the
queue is FIFO without a queue object, and the admitted count over T seconds is exactly
rate x T + burst. A reservation whose wait is too long is not made at all.
"""

from __future__ import annotations

import math
from collections import OrderedDict

from .clock import Clock


class TokenBucket:
    def __init__(self, rate: float, burst: int, clock: Clock) -> None:
        self.rate = rate
        self.burst = float(burst)
        self.clock = clock
        self.tokens = float(burst)
        self.stamp = clock.monotonic()

    def _refill(self) -> float:
        now = self.clock.monotonic()
        self.tokens = min(self.burst, self.tokens + (now - self.stamp) * self.rate)
        self.stamp = now
        return now

    def wait_for_token(self) -> float:
        """Seconds until a reservation made now would be served (0: at once)."""
        self._refill()
        return 0.0 if self.tokens >= 1 else (1 - self.tokens) / self.rate

    def reserve(self, max_wait: float) -> float | None:
        """Take a token; returns the wait for it, or None (nothing taken) past max_wait."""
        # wait_for_token(), inlined: this runs for every request.
        now = self.clock.monotonic()
        tokens = min(self.burst, self.tokens + (now - self.stamp) * self.rate)
        self.stamp = now
        wait = 0.0 if tokens >= 1 else (1 - tokens) / self.rate
        if wait > max_wait:
            self.tokens = tokens
            return None
        self.tokens = tokens - 1
        return wait

    def give_back(self) -> None:
        """A reservation whose holder gave up before its turn."""
        self.tokens = min(self.burst, self.tokens + 1)

    def remaining(self) -> int:
        self._refill()
        return max(0, math.floor(self.tokens))


class KeyedBuckets:
    """One bucket per key, at most `max_keys`, the least recently used dropped first."""

    def __init__(self, rate: float, burst: int, max_keys: int, clock: Clock) -> None:
        self.rate = rate
        self.burst = burst
        self.max_keys = max_keys
        self.clock = clock
        self._buckets: OrderedDict[str, TokenBucket] = OrderedDict()

    def get(self, key: str) -> TokenBucket:
        bucket = self._buckets.get(key)
        if bucket is None:
            bucket = self._buckets[key] = TokenBucket(self.rate, self.burst, self.clock)
            if len(self._buckets) > self.max_keys:
                self._buckets.popitem(last=False)
        else:
            self._buckets.move_to_end(key)
        return bucket

    def __len__(self) -> int:
        return len(self._buckets)


def default_burst(rate: float, burst: int | None) -> int:
    """One second of `rate`, at least one token."""
    return burst if burst is not None else max(1, math.ceil(rate))

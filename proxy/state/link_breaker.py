"""The Redis link's own breaker: up or down, and when to look again. No I/O; time passed in.

Up: requests may ask Redis. `failures_to_open` failures in a row (an error, or no answer
within `redis.timeout`) take it down. Down: no request asks Redis, so every decision is
local and instant; a probe is due after a backoff that starts at `base` and doubles with
each failed probe up to `max_backoff`; a probe (or any call) that succeeds brings it up.
A link that goes down again soon after (`STEADY` s) starts from twice its last backoff:
a Redis that answers a PING but not the scripts in time is not asked at every `base`.
It starts down: up is what a first successful call proves.

It is not proxy/state/breaker.py's CircuitBreaker: that one guards an upstream with
samples, windows and half-open permits; Redis needs only "ask it or not" and a backoff.
"""

from __future__ import annotations

from collections.abc import Callable

from .clock import Clock

UP, DOWN = "up", "down"
STEADY = 10.0  # seconds up after which a new failure starts the backoff afresh
Change = Callable[[str, str], None]  # (to, why)


class LinkBreaker:
    def __init__(
        self,
        clock: Clock,
        on_change: Change,
        *,
        failures_to_open: int = 3,
        base: float = 0.05,
        max_backoff: float = 2.0,
    ) -> None:
        self.clock = clock
        self.on_change = on_change
        self.failures_to_open = failures_to_open
        self.base = base
        self.max_backoff = max_backoff
        self.state = DOWN
        self.failures = 0  # in a row
        self.backoff = 0.0
        self.last_backoff = 0.0  # the backoff when it last came up
        self.up_since = 0.0
        self.probe_at = clock.monotonic()  # the first probe is due at once
        self.ups = 0  # times it came up: a new connection, subscriptions to renew

    @property
    def up(self) -> bool:
        return self.state == UP

    def succeeded(self) -> None:
        self.failures = 0
        if self.state == DOWN:
            self.state, self.last_backoff, self.backoff = UP, self.backoff, 0.0
            self.up_since = self.clock.monotonic()
            self.ups += 1
            self.on_change(UP, "Redis answered")

    def failed(self, why: str) -> None:
        """A call failed or timed out; down after `failures_to_open` in a row."""
        self.failures += 1
        if self.state == UP and self.failures >= self.failures_to_open:
            now = self.clock.monotonic()
            flapping = now - self.up_since < STEADY and self.last_backoff > 0
            again = min(self.max_backoff, self.last_backoff * 2) if flapping else self.base
            self.state, self.backoff = DOWN, again
            self.probe_at = now + self.backoff
            self.on_change(DOWN, why)

    def probe_failed(self) -> None:
        """The probe of a down link failed: wait twice as long for the next one."""
        self.backoff = min(self.max_backoff, max(self.base, self.backoff * 2))
        self.probe_at = self.clock.monotonic() + self.backoff

    def probe_in(self) -> float:
        """Seconds until the next probe is due (0: now)."""
        return max(0.0, self.probe_at - self.clock.monotonic())

"""The circuit breaker's state machine: closed, open, half_open. No I/O; time is passed in.

Closed: calls flow; each verdict is a sample. A failure trips it to open on
`consecutive_failures`, or when over the window the share of failures (`failure_rate`)
reaches its threshold with at least `min_calls` samples; a slow call does the same for
the share of slow calls (`slow_calls`). Only a failure or a slow call can trip it.
Open: nothing is let through until `open_for` has passed (doubled on each trip in a row,
up to `max_open_for`). Then half_open: exactly `probes` trial calls at a time; `successes`
of them close the circuit, one failure opens it again. A probe that has not answered
within `max_wait` is that failure: its permit is freed, and its verdict, should it come
later, is ignored (each probe permit is a number of its own, so a late one is known).
The wrapper that feeds it samples is `policies/circuit.py`.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable

from ..config.upstream import CircuitBreaker as BreakerConfig
from .clock import Clock
from .window import SlidingCounts

CLOSED, HALF_OPEN, OPEN = "closed", "half_open", "open"
STATE_VALUE = {CLOSED: 0, HALF_OPEN: 1, OPEN: 2}

# What admit() grants: REJECT, CALL, or a probe permit, a number of PROBE or above.
REJECT, CALL, PROBE = 0, 1, 2
Transition = Callable[[str, str, str], None]  # (from, to, why)


class CircuitBreaker:
    def __init__(self, config: BreakerConfig, clock: Clock, on_transition: Transition) -> None:
        self.config = config
        self.clock = clock
        self.on_transition = on_transition
        self.state = CLOSED
        self.open_until = 0.0
        self.trips_in_a_row = 0
        self._consecutive = 0
        self._probes: dict[int, float] = {}  # permit -> when it was granted
        self._probe_ids = itertools.count(PROBE)
        self._probe_successes = 0
        rate, slow = config.failure_rate, config.slow_calls
        self._failures = SlidingCounts(rate.window, clock) if rate else None
        self._slow = SlidingCounts(slow.window, clock) if slow else None
        # An operator's override (control API): "open" or "closed" until `forced_until`.
        self.forced: str | None = None
        self.forced_until = 0.0

    def force(self, state: str, ttl: float) -> None:
        """Hold the circuit open or closed for `ttl` seconds, whatever the samples say."""
        self.forced, self.forced_until = state, self.clock.monotonic() + ttl
        if state == OPEN:
            self.open_until = self.forced_until
        if self.state != state:
            self._move(state, "forced by the control API")

    def reset(self) -> None:
        """Back to closed, counters and growth cleared, any override lifted."""
        self.forced = None
        self.trips_in_a_row = 0
        self._move(CLOSED, "reset by the control API")

    def _override(self) -> int | None:
        if self.clock.monotonic() >= self.forced_until:
            self.forced = None  # expired: back to the samples' rule, from where it stands
            return None
        return REJECT if self.forced == OPEN else CALL

    def admit(self) -> int:
        """CALL, a probe permit (PROBE or above, each one its own), or REJECT (the circuit
        is open, or every probe slot is taken)."""
        if self.forced is not None:
            decided = self._override()
            if decided is not None:
                return decided
        if self.state == CLOSED:
            return CALL
        now = self.clock.monotonic()
        if self.state == OPEN:
            if now < self.open_until:
                return REJECT
            self._move(HALF_OPEN, "open_for elapsed")
        elif self._late(now):
            self._trip("a probe did not answer within max_wait")
            return REJECT
        if len(self._probes) < self.config.half_open.probes:
            permit = next(self._probe_ids)
            self._probes[permit] = now
            return permit
        return REJECT

    def _late(self, now: float) -> bool:
        """Has a probe out now gone unanswered past max_wait?"""
        max_wait = self.config.half_open.max_wait
        return any(now - granted >= max_wait for granted in self._probes.values())

    def current(self) -> str:
        """The state a call would find now: an override while it lasts, and an open circuit
        whose `open_for` has passed is half_open (ready to probe) even before a call came
        to move it. What metrics, the status and the degradation level read."""
        now = self.clock.monotonic()
        if self.forced is not None and now < self.forced_until:
            return self.forced
        if self.state == OPEN and now >= self.open_until:
            return HALF_OPEN
        if self.state == HALF_OPEN and self._late(now):
            return OPEN  # the late probe is a failed one: the next call reopens it
        return self.state

    def ready_to_probe(self) -> bool:
        """Would admit() grant a probe now? (A shed route lets such a call through.)"""
        if self.current() != HALF_OPEN:
            return False
        return self.state == OPEN or len(self._probes) < self.config.half_open.probes

    def retry_after(self) -> float:
        """Seconds until calls may flow again (for the Retry-After of a rejection)."""
        return max(1.0, self.open_until - self.clock.monotonic())

    def status(self) -> dict[str, object]:
        now = self.clock.monotonic()
        forced = self.forced if self.forced is not None and now < self.forced_until else None
        state = self.current()
        return {
            "state": state,
            "open_for_s": round(max(0.0, self.open_until - now), 3) if state == OPEN else 0,
            "trips_in_a_row": self.trips_in_a_row,
            "override": {"state": forced, "expires_in_s": round(self.forced_until - now, 3)}
            if forced
            else None,
        }

    def record(
        self, permit: int, *, failure: bool, slow: bool = False, now: float | None = None
    ) -> None:
        """The verdict of a call that admit() let through (`now`: the clock, if read)."""
        if permit >= PROBE:
            granted = self._probes.pop(permit, None)
            if granted is None or self.state != HALF_OPEN:
                return  # late (counted failed at max_wait), or of an earlier half-open period
            late = (self.clock.monotonic() if now is None else now) - granted
            if failure or late >= self.config.half_open.max_wait:
                self._trip("a probe failed" if failure else "a probe answered after max_wait")
                return
            self._probe_successes += 1
            if self._probe_successes >= self.config.half_open.successes:
                self.trips_in_a_row = 0
                self._move(CLOSED, "probes succeeded")
            return
        if self.state != CLOSED or self.forced is not None:
            return  # admitted before a trip, or under an override: its verdict is stale
        self._consecutive = self._consecutive + 1 if failure else 0
        if self._failures is not None:
            self._failures.add(1, int(failure), now)
        if self._slow is not None:
            self._slow.add(1, int(slow), now)
        if failure or slow:  # only a failure or a slow call can trip it
            why = self._why_trip()
            if why:
                self._trip(why)

    def release(self, permit: int) -> None:
        """A call that ended without a verdict (rejected further in, or cancelled)."""
        if permit >= PROBE:
            self._probes.pop(permit, None)

    def _why_trip(self) -> str | None:
        c = self.config
        if c.consecutive_failures is not None and self._consecutive >= c.consecutive_failures:
            return f"{self._consecutive} consecutive failures"
        if c.failure_rate is not None and self._failures is not None:
            calls, failures = self._failures.counts()
            if calls >= c.failure_rate.min_calls and failures >= c.failure_rate.threshold * calls:
                return f"failure rate {failures}/{calls}"
        if c.slow_calls is not None and self._slow is not None:
            calls, slow = self._slow.counts()
            if calls >= c.slow_calls.min_calls and slow >= c.slow_calls.threshold * calls:
                return f"slow calls {slow}/{calls}"
        return None

    def _trip(self, why: str) -> None:
        growth = 2 ** min(self.trips_in_a_row, 20)
        open_for = min(self.config.max_open_for, self.config.open_for * growth)
        self.trips_in_a_row += 1
        self.open_until = self.clock.monotonic() + open_for
        self._move(OPEN, why)

    def _move(self, to: str, why: str) -> None:
        was, self.state = self.state, to
        self._consecutive = 0
        self._probes.clear()  # probes still out give no verdict in the new state
        self._probe_successes = 0
        if self._failures is not None:
            self._failures.clear()
        if self._slow is not None:
            self._slow.clear()
        self.on_transition(was, to, why)

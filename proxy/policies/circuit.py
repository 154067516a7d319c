"""CircuitBreaker policy: asks the upstream's breaker before each attempt, tells it after.

Sits inside the retry loop, so every attempt is one sample and an open circuit stops the
loop at once (Retry never retries a rejection). Rejections from further in (bulkhead,
quota) and cancelled calls give no verdict: they are not the upstream's fault. An attempt
holding a probe permit is marked (`call.probe`), so the guards further in reject it
rather than let it wait while it holds the circuit's permit.
"""

from __future__ import annotations

from ..http.message import Call, Handler, Rejected, Reply, UpstreamFailed
from ..observe.metrics import Metrics
from ..state.breaker import PROBE, REJECT, CircuitBreaker
from ..state.classify import Conditions
from ..state.clock import Clock


class BreakerPolicy:
    def __init__(
        self, breaker: CircuitBreaker, upstream: str, clock: Clock, metrics: Metrics
    ) -> None:
        self.breaker = breaker
        self.upstream = upstream
        self.failure_on = Conditions(breaker.config.failure_on)
        slow = breaker.config.slow_calls
        self.slow_after = slow.duration if slow is not None else None
        self.clock = clock
        self.metrics = metrics

    async def __call__(self, call: Call, call_next: Handler) -> Reply:
        permit = self.breaker.admit()
        if permit == REJECT:
            self.metrics.count_rejection(call.route, "circuit_open")
            raise Rejected(
                "circuit_open",
                f"the circuit of upstream {self.upstream} is open",
                retry_after=self.breaker.retry_after(),
            )
        clock = self.clock
        call.probe = permit >= PROBE
        try:
            reply = await call_next(call)
        except UpstreamFailed as failure:
            now = clock.monotonic()
            # Slowness is timed from the send: local queueing is not the upstream's.
            slow = self.slow_after is not None and now - call.sent_at >= self.slow_after
            failed = self.failure_on.matches_reason(failure.reason)
            self.breaker.record(permit, failure=failed, slow=slow, now=now)
            raise
        except BaseException:
            self.breaker.release(permit)
            raise
        finally:
            call.probe = False
        now = clock.monotonic()
        slow = self.slow_after is not None and now - call.sent_at >= self.slow_after
        failed = self.failure_on.matches_status(reply.status)
        self.breaker.record(permit, failure=failed, slow=slow, now=now)
        return reply

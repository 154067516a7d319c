"""Retry: more attempts for what `retry.on` names, and never one that makes things worse.

Not retried: Fender's own rejections; a request whose body streamed through unbuffered
(except after `connect_error`, when nothing was sent); POST and PATCH after anything but
`connect_error` unless they carry the idempotency header; a wait (backoff or
`Retry-After`) that does not fit the deadline or exceeds `retry_after.max`; anything
once the budget is spent. In each case the last answer goes to the app as it came.
"""

from __future__ import annotations

import random

from ..config.policy import Retry as RetryConfig
from ..http.message import Call, Handler, Reply, UpstreamFailed
from ..observe.metrics import Metrics
from ..state.budget import RetryBudget
from ..state.classify import Conditions, may_repeat
from ..state.clock import Clock
from ..state.retry_after import asked_wait
from .backoff import Backoff
from .body import make_replayable

ASKS_TO_WAIT = frozenset({429, 503})


class Retry:
    def __init__(
        self, config: RetryConfig, route: str, clock: Clock, metrics: Metrics, rng: random.Random
    ) -> None:
        self.attempts = config.attempts
        self.on = Conditions(config.on)
        self.backoff = Backoff(config.backoff, rng)
        self.honor_retry_after = config.retry_after.honor
        self.retry_after_max = config.retry_after.max
        self.idempotency_header = config.idempotency_header
        self.buffer_limit = config.buffer_limit
        self.budget = RetryBudget(config.budget, clock)
        self.route = route
        self.clock = clock
        self.metrics = metrics
        metrics.zero(metrics.retry_budget_exhausted, route)

    async def __call__(self, call: Call, call_next: Handler) -> Reply:
        call.retry_owned = True  # the attempts are decided here: apps need not add theirs
        self.budget.record_request(call.started)
        body = call.body  # no body, or a small whole one: the common case needs no await
        replayable = (
            body is None
            or (isinstance(body, bytes) and len(body) <= self.buffer_limit)
            or await make_replayable(call, self.buffer_limit)
        )
        if not replayable:
            self.metrics.count_retry_skipped(self.route, "body_too_large")
        while True:
            reply: Reply | None = None
            error: UpstreamFailed | None = None
            try:
                reply = await call_next(call)
            except UpstreamFailed as failure:
                condition, error = failure.reason, failure
                if not self.on.matches_reason(condition):
                    raise
            else:
                if not self.on.matches_status(reply.status):
                    if call.attempts > 1 and reply.outcome == "ok":
                        reply.outcome = "retried"
                    return reply
                condition, error = str(reply.status), None
            try:
                wait = self._next_wait(call, condition, reply, replayable)
            except BaseException:
                if reply is not None:
                    reply.release()
                raise
            if wait is None:
                if reply is not None:
                    # A status Fender would have retried (a 429, a 5xx) that it gives up on
                    # is a failure, whatever the upstream's answer said of itself.
                    reply.outcome = "failed"
                    reply.fender_reason = reply.fender_reason or "upstream_status"
                    return reply
                assert error is not None
                raise error
            self.metrics.count_retry(self.route, condition)
            if reply is not None:
                reply.release()
            await self.clock.sleep(wait)

    def _next_wait(
        self, call: Call, condition: str, reply: Reply | None, replayable: bool
    ) -> float | None:
        """Seconds to wait before the next attempt, or None: relay what we have."""
        if call.attempts >= self.attempts:
            return None
        if not may_repeat(call.method, condition, call.headers, self.idempotency_header):
            self.metrics.count_retry_skipped(self.route, "not_idempotent")
            return None
        if not replayable and condition != "connect_error":
            return None  # counted once, when the body could not be buffered
        if call.upgrade is not None and condition != "connect_error":
            return None  # a handshake is retried only when it surely never arrived
        wait = None
        if reply is not None and self.honor_retry_after and reply.status in ASKS_TO_WAIT:
            wait = asked_wait(reply.headers, self.clock.wall())
            if wait is not None and wait > self.retry_after_max:
                self.metrics.count_retry_skipped(self.route, "retry_after_too_long")
                return None
        if wait is None:
            wait = self.backoff(call.attempts)
        if self.clock.monotonic() + wait >= call.deadline:
            self.metrics.count_retry_skipped(self.route, "deadline")
            return None
        if not self.budget.try_spend():
            self.metrics.count_budget_exhausted(self.route)
            return None
        return wait

"""Fallback: when the request failed in a way `fallback.on` names, answer from the chain.

Outermost, so it sees every failure below it. It decides on status and headers only, so
it acts before any byte went to the app, never after. Steps, in order:
`upstream` (the same request to another upstream, through that upstream's own breaker,
bulkhead and quota, with that upstream's headers), `stale` (the last good answer to the
same method, path and query, for the same credentials and selecting headers: see
stale_cache.py), `static` (a fixed answer). The first that answers wins; if
none does, the original failure goes to the app.
"""

from __future__ import annotations

from collections.abc import Mapping

from ..config.policy import Fallback as FallbackConfig
from ..config.policy import FallbackStep
from ..http.headers import Headers
from ..http.hygiene import RequestHeaders
from ..http.message import Call, FenderError, Handler, Reply, UpstreamFailed
from ..observe.metrics import Metrics
from ..state.classify import may_repeat
from ..state.clock import Clock
from ..state.stale_cache import StaleCache
from .body import make_replayable

DEFAULT_BUFFER_LIMIT = 1 << 20


def trigger_of(result: Reply | FenderError) -> str | None:
    """The word of `fallback.on` this result is, or None for a good answer."""
    if isinstance(result, FenderError):
        return result.reason
    if result.status >= 500 or result.status == 429:
        return "exhausted"
    return None


class Fallback:
    def __init__(
        self,
        config: FallbackConfig,
        route: str,
        *,
        stacks: Mapping[str, Handler],
        headers: Mapping[str, RequestHeaders],
        buffer_limit: int | None,
        idempotency_header: str | None,
        clock: Clock,
        metrics: Metrics,
        credential_header: str | None = None,
    ) -> None:
        self.on = frozenset(config.on)
        self.steps: tuple[FallbackStep, ...] = config.chain
        self.route = route
        self.stacks = stacks
        self.headers = headers
        self.clock = clock
        self.metrics = metrics
        self.fails_over = any(step.upstream for step in self.steps)
        for step in self.steps:
            metrics.zero(metrics.fallbacks, route, step.kind)
        self.idempotency_header = idempotency_header
        self.buffer_limit = buffer_limit if buffer_limit is not None else DEFAULT_BUFFER_LIMIT
        stale = next((step.stale for step in self.steps if step.stale), None)
        # The route's rate-limit key names who is asking, like a credential does.
        extra = (credential_header,) if credential_header else ()
        self.cache = StaleCache(stale, clock, extra) if stale is not None else None

    def _word(self, result: Reply | FenderError) -> str | None:
        """The trigger this result pulls, if `on` names it (`exhausted` covers any
        upstream failure that has no word of its own in `on`)."""
        word = trigger_of(result)
        if word is None or word in self.on or word == "shed":  # a shed request always falls back
            return word
        upstream_failure = isinstance(result, UpstreamFailed | Reply)
        return "exhausted" if upstream_failure and "exhausted" in self.on else None

    async def __call__(self, call: Call, call_next: Handler) -> Reply:
        if self.fails_over and call.body is not None and not isinstance(call.body, bytes):
            await make_replayable(call, self.buffer_limit)
        try:
            reply = await call_next(call)
        except FenderError as failure:
            word = self._word(failure)
            if word is None:
                raise
            answer = await self._chain(call, word)
            if answer is None:
                raise
            return answer
        status = reply.status
        if status < 500 and status != 429:  # a good answer: the common case
            if self.cache is not None:
                self._keep(call, reply)
            return reply
        word = self._word(reply)
        if word is None:
            return reply
        try:
            answer = await self._chain(call, word)
        except BaseException:
            reply.release()  # cancelled (the app left) or broken: the original goes too
            raise
        if answer is None:
            return reply
        reply.release()
        return answer

    def _keep(self, call: Call, reply: Reply) -> None:
        cache = self.cache
        if cache is None or cache.fresh(call.method, call.target):
            return
        if not cache.keeps(call.method, reply.status, reply.headers):
            return
        key = cache.key(call.method, call.target, call.incoming, reply.headers)
        if isinstance(reply.body, bytes):
            cache.put(key, reply.status, reply.headers, reply.body)
        else:
            reply.body = cache.tee(key, reply.status, reply.headers, reply.body)

    async def _chain(self, call: Call, word: str) -> Reply | None:
        for step in self.steps:
            answer = await self._step(call, step, word)
            if answer is not None:
                answer.outcome = "fallback"
                answer.fender_reason = word
                answer.headers["x-fender-fallback"] = step.kind
                self.metrics.count_fallback(self.route, step.kind)
                return answer
        return None

    async def _step(self, call: Call, step: FallbackStep, word: str) -> Reply | None:
        if step.upstream is not None:
            # The same rule as Retry: a POST the first upstream may have acted on is not
            # sent to a second one, unless nothing was sent or it has an idempotency key.
            if not may_repeat(call.method, word, call.headers, self.idempotency_header):
                return None
            return await self._failover(call, step.upstream)
        if step.stale is not None:
            cache = self.cache
            kept = cache.get(call.method, call.target, call.incoming) if cache else None
            if kept is None:
                return None
            entry, age = kept
            headers = entry.headers.copy()
            headers["age"] = str(int(age))
            return Reply(status=entry.status, headers=headers, body=entry.body)
        assert step.static is not None
        return Reply(
            status=step.static.status,
            headers=Headers(step.static.headers),
            body=step.static.content,
        )

    async def _failover(self, call: Call, upstream: str) -> Reply | None:
        if call.replayable is False or call.incoming is None:
            return None  # its body streamed through: it cannot be sent again
        if self.clock.monotonic() >= call.deadline:
            return None
        call.headers = self.headers[upstream].build(call.incoming, call.request_id, call.client_ip)
        call.last_endpoint = None
        try:
            reply = await self.stacks[upstream](call)
        except FenderError:
            return None
        if trigger_of(reply) is not None:
            reply.release()
            return None
        return reply

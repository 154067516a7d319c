"""Rate limits: a route's limit on incoming requests, and an upstream's quota on attempts.

`RateLimit` (route, optionally one bucket per key) is spent once per request, before the
retry loop. `Quota` (upstream) is spent by every attempt, retries and failovers included,
so Fender never sends an upstream more than its quota. With `on_limit: queue` a request
waits for its token (FIFO, up to `max_wait`, never past the deadline); otherwise, or past
that, it gets 429 `rate_limited` with `Retry-After` and the IETF `RateLimit` headers.

The quota's cool-down: when the upstream answers 429 or 503 with a wait (`Retry-After`,
`retry-after-ms`, the rate-limit reset headers: see retry_after.py), every attempt holds
off that long: it waits if its deadline allows, or is answered at once with the time left.
A half-open probe never waits (neither a cool-down nor for a token): it holds the
circuit's only permit, so it is answered at once instead.
"""

from __future__ import annotations

from collections.abc import Callable

from ..config.policy import RouteRateLimit
from ..config.upstream import UpstreamRateLimit
from ..http.message import Call, Handler, Rejected, Reply
from ..observe.metrics import Metrics
from ..state.clock import Clock
from ..state.retry_after import asked_wait
from ..state.token_bucket import KeyedBuckets, TokenBucket, default_burst

ASKS_TO_WAIT = frozenset({429, 503})


def _reserve(
    bucket: TokenBucket, call: Call, queue: bool, max_wait: float, clock: Clock
) -> float | None:
    """Reserve a token; returns the wait for it, or None when none can be had in time."""
    wait = bucket.reserve(max_wait if queue else 0.0)
    if wait and clock.monotonic() + wait >= call.deadline:
        bucket.give_back()  # the token would come after the deadline
        return None
    return wait


async def _wait_turn(bucket: TokenBucket, wait: float, clock: Clock) -> None:
    try:
        await clock.sleep(wait)
    except BaseException:
        bucket.give_back()  # gave up before its turn
        raise


def _limited(scope: str, bucket: TokenBucket, name: str) -> Rejected:
    return limited(scope, name, bucket.rate, bucket.burst, bucket.wait_for_token())


def limited(scope: str, name: str, rate: float, burst: float, retry_after: float) -> Rejected:
    """The 429 of a spent bucket, local or global."""
    window = max(1, round(burst / rate))
    return Rejected(
        "rate_limited",
        f"rate limit of {scope} reached",
        status=429,
        retry_after=retry_after,
        headers={
            # draft-ietf-httpapi-ratelimit-headers: quota q per window w; r left, t to wait
            "ratelimit-policy": f'"{name}";q={int(burst)};w={window}',
            "ratelimit": f'"{name}";r=0;t={max(1, round(retry_after + 0.5))}',
        },
    )


class RateLimit:
    """A route's limit on incoming requests."""

    def __init__(self, config: RouteRateLimit, route: str, clock: Clock, metrics: Metrics) -> None:
        burst = default_burst(config.rate, config.burst)
        self.single = TokenBucket(config.rate, burst, clock) if config.key is None else None
        self.keyed = KeyedBuckets(config.rate, burst, config.max_keys, clock)
        self.header = config.header
        self.queue = config.on_limit == "queue"
        self.max_wait = config.max_wait
        self.route = route
        self.scope = f"route:{route}"
        self.clock = clock
        self.metrics = metrics

    def bucket(self, call: Call) -> TokenBucket:
        if self.single is not None:
            return self.single
        if self.header is not None:
            key = call.incoming.get(self.header, "") if call.incoming is not None else ""
        else:
            key = call.client_ip or ""
        return self.keyed.get(key)

    async def __call__(self, call: Call, call_next: Handler) -> Reply:
        bucket = self.bucket(call)
        wait = _reserve(bucket, call, self.queue, self.max_wait, self.clock)
        if wait is None:
            self.metrics.count_rejection(self.route, "rate_limited")
            raise _limited(f"route {self.route}", bucket, self.route)
        if wait:
            await _wait_turn(bucket, wait, self.clock)
            self.metrics.observe_rate_limit_wait(self.scope, wait)
        return await call_next(call)


class Quota:
    """An upstream's quota on attempts, with the cool-down its 429s and 503s ask for."""

    share: Callable[[str, float], None] | None = None
    """Set in a fleet: tells the other replicas of a cool-down learned here."""

    def __init__(
        self, config: UpstreamRateLimit, upstream: str, clock: Clock, metrics: Metrics
    ) -> None:
        self.bucket = None
        if config.rate is not None:
            burst = default_burst(config.rate, config.burst)
            self.bucket = TokenBucket(config.rate, burst, clock)
        self.queue = config.on_limit == "queue"
        self.max_wait = config.max_wait
        self.cooldown = config.cooldown
        self.max_cooldown = config.max_cooldown
        self.paused_until = 0.0
        self.upstream = upstream
        self.scope = f"upstream:{upstream}"
        self.clock = clock
        self.metrics = metrics

    def pause_left(self) -> float:
        return max(0.0, self.paused_until - self.clock.monotonic())

    def hold(self, seconds: float) -> None:
        """Cool down for `seconds` from now (or longer, if already), up to max_cooldown."""
        pause = min(seconds, self.max_cooldown)
        self.paused_until = max(self.paused_until, self.clock.monotonic() + pause)

    async def _hold_off(self, call: Call) -> None:
        """During a cool-down: wait it out if the deadline allows, else 429 at once."""
        pause = self.paused_until - self.clock.monotonic()
        if pause <= 0:
            self.paused_until = 0.0  # over: the calls after this one skip the check
            return
        if call.probe or self.clock.monotonic() + pause >= call.deadline:
            self.metrics.count_rejection(call.route, "rate_limited")
            raise Rejected(
                "rate_limited",
                f"upstream {self.upstream} asked for a pause",
                status=429,
                retry_after=pause,
            )
        await self.clock.sleep(pause)
        self.metrics.observe_rate_limit_wait(self.scope, pause)

    def _learn(self, reply: Reply) -> None:
        asked = asked_wait(reply.headers, self.clock.wall())
        if asked:
            self.hold(asked)
            if self.share is not None:
                self.share(self.upstream, min(asked, self.max_cooldown))

    async def __call__(self, call: Call, call_next: Handler) -> Reply:
        if self.paused_until:
            await self._hold_off(call)
        if self.bucket is not None:
            queue = self.queue and not call.probe
            wait = _reserve(self.bucket, call, queue, self.max_wait, self.clock)
            if wait is None:
                self.metrics.count_rejection(call.route, "rate_limited")
                raise _limited(f"upstream {self.upstream}", self.bucket, self.upstream)
            if wait:
                await _wait_turn(self.bucket, wait, self.clock)
                self.metrics.observe_rate_limit_wait(self.scope, wait)
        reply = await call_next(call)
        if self.cooldown and reply.status in ASKS_TO_WAIT:
            self._learn(reply)
        return reply

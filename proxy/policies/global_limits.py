"""Rate limits with `scope: global`: the route's limit and the upstream's quota, decided
in the fleet's bucket in Redis (proxy/fleet/buckets.py).

They answer as their local twins in rate_limit.py do (429 `rate_limited` with
Retry-After and the RateLimit headers, FIFO waits in `queue` mode up to `max_wait` and
never past the deadline, a half-open probe never waiting), with `rate` and `burst` the
fleet's totals. A decision waits for Redis at most `redis.timeout`; past it, or while
the link is down, the replica's share of the bucket decides: Redis failing never fails
a request. The local policies are untouched, so a route without `scope: global` costs
exactly what it did.
"""

from __future__ import annotations

from ..config.policy import RouteRateLimit
from ..config.upstream import UpstreamRateLimit
from ..fleet import Fleet
from ..fleet.buckets import GlobalBucket
from ..http.message import Call, Handler, Reply
from ..observe.metrics import Metrics
from ..state.clock import Clock
from ..state.token_bucket import default_burst
from .rate_limit import ASKS_TO_WAIT, Quota, limited


class _Spend:
    """One global bucket's admission: reserve, then wait for the turn or be rejected."""

    def __init__(
        self,
        bucket: GlobalBucket,
        who: str,
        name: str,
        queue: bool,
        max_wait: float,
        clock: Clock,
        metrics: Metrics,
    ) -> None:
        self.bucket = bucket
        self.who = who
        self.name = name
        self.queue = queue
        self.max_wait = max_wait
        self.clock = clock
        self.metrics = metrics

    async def __call__(self, call: Call, key: str | None, queue: bool) -> None:
        left = call.deadline - self.clock.monotonic()
        max_wait = self.max_wait if queue else 0.0
        granted, wait, decided_by = await self.bucket.reserve(key, max_wait, left)
        if not granted:
            self.metrics.count_rejection(call.route, "rate_limited")
            raise limited(self.who, self.name, self.bucket.rate, self.bucket.burst, wait)
        if wait:
            try:
                await self.clock.sleep(wait)
            except BaseException:
                self.bucket.give_back(key, decided_by)  # gave up before its turn
                raise
            self.metrics.observe_rate_limit_wait(self.bucket.scope, wait)


class GlobalRateLimit:
    """A route's limit on incoming requests, for the whole fleet."""

    def __init__(
        self, config: RouteRateLimit, route: str, fleet: Fleet, clock: Clock, metrics: Metrics
    ) -> None:
        bucket = GlobalBucket(
            fleet,
            f"route:{route}",
            config.rate,
            default_burst(config.rate, config.burst),
            keyed=config.key is not None,
            max_keys=config.max_keys,
            clock=clock,
            metrics=metrics,
        )
        self.keyed = config.key is not None
        self.header = config.header
        self.queue = config.on_limit == "queue"
        self.spend = _Spend(
            bucket, f"route {route}", route, self.queue, config.max_wait, clock, metrics
        )

    def key(self, call: Call) -> str | None:
        if not self.keyed:
            return None
        if self.header is not None:
            return call.incoming.get(self.header, "") if call.incoming is not None else ""
        return call.client_ip or ""

    async def __call__(self, call: Call, call_next: Handler) -> Reply:
        await self.spend(call, self.key(call), self.queue)
        return await call_next(call)


class GlobalQuota(Quota):
    """An upstream's quota on attempts, for the whole fleet; the cool-down as Quota's."""

    def __init__(
        self,
        config: UpstreamRateLimit,
        upstream: str,
        fleet: Fleet,
        clock: Clock,
        metrics: Metrics,
    ) -> None:
        super().__init__(config, upstream, clock, metrics)
        assert config.rate is not None
        self.bucket = None  # not this replica's: the fleet's, below
        self.global_bucket = GlobalBucket(
            fleet,
            f"upstream:{upstream}",
            config.rate,
            default_burst(config.rate, config.burst),
            keyed=False,
            max_keys=1,
            clock=clock,
            metrics=metrics,
        )
        self.spend = _Spend(
            self.global_bucket,
            f"upstream {upstream}",
            upstream,
            self.queue,
            config.max_wait,
            clock,
            metrics,
        )

    async def __call__(self, call: Call, call_next: Handler) -> Reply:
        if self.paused_until:
            await self._hold_off(call)
        await self.spend(call, None, self.queue and not call.probe)
        reply = await call_next(call)
        if self.cooldown and reply.status in ASKS_TO_WAIT:
            self._learn(reply)
        return reply

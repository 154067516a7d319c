"""Global token buckets: one bucket in Redis for the whole fleet, decided by one Lua script.

The script is proxy/state/token_bucket.py's arithmetic, run atomically where the bucket
lives: a reservation may take the tokens below zero (so `on_limit: queue` is FIFO across
the fleet), a reservation whose wait is past `max_wait` or the deadline takes nothing,
and a waiter that gives up gives its token back. Over T seconds the fleet is admitted
rate x T + burst. Time is Redis's own (TIME), so the replicas' clocks need not agree;
a test may pass `now` instead to run it on a fake clock. The key expires once the bucket
would be full again, so keyed buckets cost Redis nothing when idle.

When Redis cannot decide (the link is down, or no answer within `redis.timeout`), this
replica decides alone with a local bucket of rate / N and burst / N, N being the live
replicas last counted (heartbeat.py): the fleet as a whole keeps about its limit.
"""

from __future__ import annotations

import asyncio
import hashlib
import math
from typing import TYPE_CHECKING, Any

from ..observe.metrics import Metrics
from ..state.clock import Clock
from ..state.token_bucket import KeyedBuckets, TokenBucket
from .link import Link, bulk

if TYPE_CHECKING:
    from . import Fleet

# KEYS[1]: the bucket. ARGV: rate, burst, max_wait, left (time to the deadline),
# now ('' for Redis's clock), op ('take' or 'give').
# Returns "granted wait" (granted: 1 or 0; wait: for the token taken, or, when none
# was taken, for the next one: the Retry-After). One short text, not an array: Lua
# numbers would become integers on the way out, and redis-py reads one bulk string in
# half the time of a two-item array.
BUCKET_LUA = """
local rate, burst = tonumber(ARGV[1]), tonumber(ARGV[2])
local now = tonumber(ARGV[5])
if not now then
  local t = redis.call('TIME')
  now = tonumber(t[1]) + tonumber(t[2]) / 1000000
end
local state = redis.call('HMGET', KEYS[1], 't', 's')
local tokens, stamp = tonumber(state[1]), tonumber(state[2])
if not tokens then
  tokens, stamp = burst, now
end
if now > stamp then
  tokens = math.min(burst, tokens + (now - stamp) * rate)
else
  now = stamp
end
local wait = 0
if tokens < 1 then
  wait = (1 - tokens) / rate
end
local granted = 1
if ARGV[6] == 'give' then
  tokens = math.min(burst, tokens + 1)
  wait = 0
elseif wait > tonumber(ARGV[3]) or (wait > 0 and wait >= tonumber(ARGV[4])) then
  granted = 0
else
  tokens = tokens - 1
end
redis.call('HSET', KEYS[1], 't', string.format('%.17g', tokens), 's', string.format('%.17g', now))
redis.call('PEXPIRE', KEYS[1], math.ceil(((burst - tokens) / rate + 1) * 1000))
return string.format('%d %.17g', granted, wait)
"""

FAR = 1e9  # "no deadline", as a number Lua reads
_NOW, _TAKE = bulk(b""), bulk(b"take")  # Redis's clock; the operation
# (granted, wait or Retry-After, the local bucket that decided or None for Redis)
Decision = tuple[bool, float, TokenBucket | None]


def decision(reply: Any) -> tuple[bool, float] | None:
    """The script's answer as (granted, wait); None for anything else (decide locally)."""
    try:
        granted, wait = reply.split(b" ")
        return granted == b"1", float(wait)
    except (AttributeError, TypeError, ValueError):
        return None


class GlobalBucket:
    """A fleet-wide bucket (one per key when `keyed`), with this replica's fallback."""

    def __init__(
        self,
        fleet: Fleet,
        scope: str,
        rate: float,
        burst: int,
        *,
        keyed: bool,
        max_keys: int,
        clock: Clock,
        metrics: Metrics,
    ) -> None:
        self.link: Link = fleet.link
        self.fleet = fleet
        self.script = fleet.link.register(BUCKET_LUA)
        self.key = fleet.key("bucket", scope)
        self.scope = scope
        self.rate = rate
        self.burst = burst
        self.keyed = keyed
        self.max_keys = max_keys
        self.clock = clock
        self.metrics = metrics
        self.args_rate, self.args_burst = repr(rate), str(burst)
        # The decision's frame up to its first varying argument, made once (unkeyed).
        self._head = self._frame_head(self.key)
        metrics.zero(metrics.rate_limit_fallbacks, scope)  # exported at 0 (increase())
        self._shared_by = 0  # the N the fallback buckets were made for
        self._single: TokenBucket | None = None
        self._keyed: KeyedBuckets | None = None

    def redis_key(self, key: str | None) -> str:
        if key is None:
            return self.key
        # Key values come from requests (a tenant id, a credential): kept as digests.
        return f"{self.key}:{hashlib.sha256(key.encode()).hexdigest()[:32]}"

    def _frame_head(self, redis_key: str) -> bytes:
        parts = ("EVALSHA", self.script.sha, "1", redis_key, self.args_rate, self.args_burst)
        return b"*10\r\n" + b"".join(bulk(part.encode()) for part in parts)

    async def reserve(
        self, key: str | None, max_wait: float, left: float, now: float | str = ""
    ) -> Decision:
        """Take a token (waiting at most `max_wait`, and less than `left`), or not.
        `now`: Redis's clock unless a test gives its own."""
        head = self._head if key is None else self._frame_head(self.redis_key(key))
        tail = bulk(repr(max_wait).encode()) + bulk(repr(min(left, FAR)).encode())
        tail += _NOW if now == "" else bulk(repr(now).encode())
        future = self.link.send(head + tail + _TAKE)
        if future is not None:
            decided = decision(await future)  # None: UNAVAILABLE, or not its answer
            if decided is not None:
                return decided[0], decided[1], None
        return self._locally(key, max_wait, left)

    def _locally(self, key: str | None, max_wait: float, left: float) -> Decision:
        self.metrics.count_rate_limit_fallback(self.scope)
        bucket = self.fallback(key)
        wait = bucket.reserve(max_wait)
        if wait is None:
            return False, bucket.wait_for_token(), bucket
        if wait and wait >= left:
            bucket.give_back()
            return False, wait, bucket
        return True, wait, bucket

    def give_back(
        self, key: str | None, decided_by: TokenBucket | None, now: float | str = ""
    ) -> asyncio.Future[Any] | None:
        """A waiter gave up before its turn: its token goes back where it came from.
        (Nobody waits for Redis's answer; a test may.)"""
        if decided_by is not None:
            decided_by.give_back()
            return None
        args = (self.args_rate, self.args_burst, 0, 0, now, "give")
        return self.link.call(self.script, (self.redis_key(key),), args)

    def fallback(self, key: str | None) -> TokenBucket:
        """This replica's share of the bucket: rate / N, burst / N (at least 1)."""
        n = self.fleet.replicas
        if n != self._shared_by:
            self._shared_by = n
            rate, burst = self.rate / n, max(1, math.floor(self.burst / n))
            self._single = TokenBucket(rate, burst, self.clock)
            self._keyed = KeyedBuckets(rate, burst, self.max_keys, self.clock)
        if key is None or not self.keyed:
            assert self._single is not None
            return self._single
        assert self._keyed is not None
        return self._keyed.get(key)

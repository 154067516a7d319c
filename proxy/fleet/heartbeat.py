"""Heartbeats: how many replicas the fleet has now, so that each one knows its share.

Each replica keeps its own entry in the fleet's sorted set, renewed every INTERVAL and
expiring TTL after its last beat (a replica that died drops out by itself; one that
stops leaves at once). One script per beat renews the entry, drops the expired ones and
counts the rest, on Redis's clock. While Redis is away, the last count is kept: it is
what the local fallback divides the fleet's limits by.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..state.clock import Clock
from .link import UNAVAILABLE

if TYPE_CHECKING:
    from . import Fleet

INTERVAL, TTL = 1.0, 3.0  # seconds

# KEYS[1]: the fleet's replicas. ARGV: this replica, TTL in ms, 'beat' or 'leave'.
BEAT_LUA = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local ttl = tonumber(ARGV[2])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
if ARGV[3] == 'leave' then
  redis.call('ZREM', KEYS[1], ARGV[1])
else
  redis.call('ZADD', KEYS[1], now + ttl, ARGV[1])
end
redis.call('PEXPIRE', KEYS[1], ttl * 2)
return redis.call('ZCARD', KEYS[1])
"""


class Heartbeat:
    def __init__(self, fleet: Fleet, clock: Clock) -> None:
        self.fleet = fleet
        self.clock = clock
        self.script = fleet.link.register(BEAT_LUA)
        self.key = fleet.key("replicas")
        self.replicas = 1  # the last count; 1 until Redis has answered once
        self.counted = False

    async def beat(self, what: str = "beat") -> None:
        args = (self.fleet.replica, round(TTL * 1000), what)
        future = self.fleet.link.call(self.script, (self.key,), args)
        if future is None:
            return
        count = await future
        if count is not UNAVAILABLE and isinstance(count, int) and what == "beat":
            self.replicas, self.counted = max(1, count), True

    async def run(self) -> None:
        while True:
            await self.beat()
            await self.clock.sleep(INTERVAL)

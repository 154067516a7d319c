"""Fleet-wide cool-downs: what one replica learns from an upstream's Retry-After holds
every replica of the fleet.

The replica that sees the 429 (or 503) runs one script: it stores the wait under the
upstream's key with that TTL (so a replica that starts, or reconnects, later reads the
time left with PTTL) and publishes it on the fleet's channel, unless a longer cool-down
is already stored. Every replica listens on the channel and holds its own quota for
the time said, within a few milliseconds. Waits travel as durations, never as clock
readings: the replicas' clocks need not agree. While Redis is away, each replica keeps
its own cool-downs, as it does without a fleet.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING

from ..observe.logs import JsonLog
from ..state.clock import Clock
from .link import CONNECT_WAIT

if TYPE_CHECKING:
    from . import Fleet

# KEYS[1]: the upstream's cool-down. ARGV: milliseconds, channel, message.
SHARE_LUA = """
local ms = tonumber(ARGV[1])
if redis.call('PTTL', KEYS[1]) < ms then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ms)
  redis.call('PUBLISH', ARGV[2], ARGV[3])
  return 1
end
return 0
"""
BASE, MAX_BACKOFF = 0.05, 2.0  # resubscribing after the channel's connection failed
Hold = Callable[[float], None]  # a quota's hold(seconds)


class Cooldowns:
    def __init__(self, fleet: Fleet, clock: Clock, log: JsonLog) -> None:
        self.fleet = fleet
        self.link = fleet.link
        self.clock = clock
        self.log = log
        self.script = fleet.link.register(SHARE_LUA)
        self.channel = fleet.key("cooldowns")
        self.holders: dict[str, Hold] = {}  # upstream -> its quota's hold()
        self.subscribed = False

    def key(self, upstream: str) -> str:
        return self.fleet.key("cooldown", upstream)

    def share(self, upstream: str, seconds: float) -> None:
        """Tell the fleet (fire and forget: the reply that taught it goes on at once)."""
        ms = max(1, round(seconds * 1000))
        message = f"{self.fleet.replica} {upstream} {ms}"
        self.link.call(self.script, (self.key(upstream),), (ms, self.channel, message))

    def adopt(self, holders: dict[str, Hold]) -> None:
        """The running generation's quotas; new names read what is stored for them."""
        new = [name for name in holders if name not in self.holders]
        self.holders = holders
        if new and self.subscribed:
            self.fleet.run(lambda: self._catch_up(new))

    def learned(self, message: bytes) -> None:
        try:
            replica, upstream, ms = message.decode().split(" ")
            seconds = int(ms) / 1000
        except (UnicodeDecodeError, ValueError):
            return  # not ours
        hold = self.holders.get(upstream)
        if hold is not None and replica != self.fleet.replica:
            hold(seconds)

    async def _catch_up(self, names: Iterable[str]) -> None:
        """Hold what is stored: cool-downs that started before we listened."""
        names = list(names)
        if not names:
            return
        pipe = self.link.client.pipeline(transaction=False)
        for name in names:
            pipe.pttl(self.key(name))
        try:
            left = await asyncio.wait_for(pipe.execute(), CONNECT_WAIT)
        except self.link.errors:
            return  # the channel's loop tries again
        for name, ms in zip(names, left, strict=True):
            hold = self.holders.get(name)
            if hold is not None and isinstance(ms, int) and ms > 0:
                hold(ms / 1000)

    async def run(self) -> None:
        """Listen on the channel for good; resubscribe (with backoff) when it breaks, and
        when the link came back up (a silent network split may have left it dead)."""
        backoff, me = BASE, asyncio.current_task()
        # redis-py's get_message() may swallow a cancellation (and wait on): so the loops
        # also end when one was asked for.
        while me is None or not me.cancelling():
            pubsub = self.link.client.pubsub(ignore_subscribe_messages=True)
            try:
                await asyncio.wait_for(pubsub.subscribe(self.channel), CONNECT_WAIT)
                ups = self.link.breaker.ups
                self.subscribed = True
                await self._catch_up(self.holders)
                backoff = BASE
                while self.link.breaker.ups == ups and not (me and me.cancelling()):
                    message = await pubsub.get_message(timeout=1.0)
                    if message is not None and message.get("type") == "message":
                        self.learned(message["data"])
            except self.link.errors:
                await self.clock.sleep(backoff)
                backoff = min(MAX_BACKOFF, backoff * 2)
            finally:
                self.subscribed = False
                with contextlib.suppress(*self.link.errors):
                    await asyncio.wait_for(pubsub.aclose(), CONNECT_WAIT)  # type: ignore[no-untyped-call]

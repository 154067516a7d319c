"""What the replicas of one fleet share through Redis: global token buckets (buckets.py),
cool-downs (cooldowns.py) and the count of live replicas (heartbeat.py), over one link
(link.py).

Every key and channel is `{prefix}:{fleet}:...`: `redis.prefix` lets several fleets share
one Redis, and `redis.fleet` (default: the policy file's hash) says which replicas count
as one. Breakers are not shared, on purpose: one replica's bad network must not open
the fleet's circuit.

A reload keeps the link when the `redis` section's URL, password and timeout are
unchanged, and the whole fleet when its name is unchanged too.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import socket
from collections.abc import Callable, Coroutine
from typing import TYPE_CHECKING, Any

from ..observe.logs import JsonLog
from ..state.clock import Clock
from .cooldowns import Cooldowns, Hold
from .heartbeat import Heartbeat
from .link import CONNECT_WAIT, Link

if TYPE_CHECKING:
    from ..config.model import Config

__all__ = ["Fleet", "Link", "fleet_for"]


def replica_id() -> str:
    """The host name (a pod's name), the PID and a random part: unique, and readable."""
    return f"{socket.gethostname()[:40]}-{os.getpid()}-{secrets.token_hex(3)}"


class Fleet:
    def __init__(self, link: Link, name: str, prefix: str, clock: Clock, log: JsonLog) -> None:
        self.link = link
        self.name = name
        self.namespace = f"{prefix}:{name}"
        self.clock = clock
        self.log = log
        self.replica = replica_id()
        self.heartbeat = Heartbeat(self, clock)
        self.cooldowns = Cooldowns(self, clock, log)
        self._tasks: set[asyncio.Task[Any]] = set()
        self.started = False

    def key(self, *parts: str) -> str:
        return ":".join((self.namespace, *parts))

    @property
    def replicas(self) -> int:
        """Live replicas, this one included: the last count (1 before Redis answered)."""
        return self.heartbeat.replicas

    def adopt(self, holders: dict[str, Hold]) -> None:
        """The quotas of the generation now running: cool-downs heard are theirs."""
        self.cooldowns.adopt(holders)

    def run(self, work: Callable[[], Coroutine[Any, Any, None]]) -> None:
        task = asyncio.ensure_future(work())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def start(self) -> None:
        """Connect (bounded), count the replicas once, then beat and listen for good."""
        if self.started:
            return
        self.started = True
        await self.link.start()
        await self.heartbeat.beat()
        self.run(self.heartbeat.run)
        self.run(self.cooldowns.run)
        self.log.event(
            "fleet",
            fleet=self.name,
            replica=self.replica,
            replicas=self.replicas,
            redis=self.link.where,
            state="up" if self.link.up else "down",
        )

    async def close(self, link_too: bool = True) -> None:
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:  # bounded: the channel's task may take a second to see it
            await asyncio.wait(self._tasks, timeout=2 * CONNECT_WAIT)
        if self.started and self.link.up:
            await self.heartbeat.beat("leave")  # the others count one less at once
        if link_too:
            await self.link.close()

    def status(self) -> dict[str, Any]:
        return {
            "fleet": self.name,
            "replica": self.replica,
            "replicas": self.replicas,
            "redis": "up" if self.link.up else "down",
            "address": self.link.where,
            "round_trips": self.link.round_trips,
            "commands": self.link.commands,
        }


def fleet_for(
    config: Config, previous: Fleet | None, *, clock: Clock, log: JsonLog
) -> Fleet | None:
    """The fleet a config asks for: `previous` itself, a new one on its link, or new."""
    section = config.redis
    if section is None:
        return None
    name = section.fleet or config.hash
    if previous is not None and _same_link(previous.link, config):
        if previous.namespace == f"{section.prefix}:{name}":
            return previous
        return Fleet(previous.link, name, section.prefix, clock, log)
    return Fleet(Link(section, clock, log), name, section.prefix, clock, log)


def _same_link(link: Link, config: Config) -> bool:
    old, new = link.config, config.redis
    assert new is not None
    return (old.url, old.password, old.timeout) == (new.url, new.password, new.timeout)

"""The queues of a running Fender, kept across reloads: their stores, their deliverers,
and the operator's view of them.

A reload swaps the delivery routes (so new deliveries use the new pipelines and header
rules) and each queue's section; a queue keeps its deliverer while its store stays the
same. A queue removed, or moved to another store, is drained and stopped in the
background (its messages stay where they were). Queues on one SQLite file or one Redis
share one store. Once a second, each queue's numbers are read into `stats` (what
metrics and /status show, without touching the store when scraped), a store that could
not be opened is tried again, and once a minute delivered messages past `max_age` are
forgotten.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
from collections.abc import Coroutine, Mapping
from typing import Any

from ..config.model import Config
from ..config.queue import SQLITE, store_kind
from ..config.queue import Queue as QueueConfig
from ..observe.logs import JsonLog
from ..observe.metrics import Metrics
from ..state.clock import Clock
from .deliverer import Deliverer
from .message import QueueStats
from .route import DeliveryRoute
from .sqlite_store import SqliteStore
from .store import QueueUnavailable, Store

TICK = 1.0  # seconds between looks at each queue's numbers
PURGE_EVERY = 60  # ticks


def store_key(config: QueueConfig) -> str:
    return str(config.path) if config.path is not None else config.store


class QueueRunner:
    """One queue: its section, its store, its deliverer and its numbers."""

    def __init__(self, name: str, config: QueueConfig, store: Store, queues: Queues) -> None:
        self.name = name
        self.config = config
        self.store = store
        self.store_key = store_key(config)
        self.queues = queues
        self.deliverer = Deliverer(
            name,
            config,
            store,
            queues.route,
            clock=queues.clock,
            metrics=queues.metrics,
            log=queues.log,
        )
        self._stats = QueueStats(0, 0.0, 0, 0, False)
        self._tasks: list[asyncio.Task[None]] = []
        self._said_unopened = False

    def reconfigure(self, config: QueueConfig) -> None:
        self.config = self.deliverer.config = config
        self.deliverer.wake()

    async def start(self) -> None:
        if await self._open():
            await self._refresh_quietly()  # a pause kept in the store holds from the start
        self._tasks = [
            asyncio.ensure_future(self.deliverer.run()),
            asyncio.ensure_future(self._tick()),
        ]

    async def _open(self) -> bool:
        if self.store.ready:
            return True
        try:
            await self.store.open()
        except QueueUnavailable as exc:
            if not self._said_unopened:
                self._said_unopened = True
                self.queues.log.event("queue_unavailable", "error", queue=self.name, error=str(exc))
            return False
        if self._said_unopened:
            self.queues.log.event("queue_available", queue=self.name)
            self._said_unopened = False
            await self._refresh_quietly()
            self.deliverer.wake()
        return True

    async def _refresh_quietly(self) -> None:
        with contextlib.suppress(QueueUnavailable):
            await self.refresh()

    async def _tick(self) -> None:
        ticks = 0
        clock = self.queues.clock
        while True:
            if await self._open():
                try:
                    await self.refresh()
                    if ticks % PURGE_EVERY == PURGE_EVERY - 1:
                        await self.store.purge(self.name, clock.wall() - self.config.max_age)
                except QueueUnavailable:
                    pass  # said by the deliverer; the numbers stay as they were
            ticks += 1
            await clock.sleep(TICK)

    @property
    def stats(self) -> QueueStats:
        """The numbers now (SQLite), or as read in the last second (Redis)."""
        if self.store.ready:
            now = self.store.snapshot(self.name, self.queues.clock.wall())
            if now is not None:
                return now
        return self._stats

    async def refresh(self) -> QueueStats:
        stats = await self.store.stats(self.name, self.queues.clock.wall())
        self._stats = stats
        if stats.paused != self.deliverer.paused:
            self.deliverer.paused = stats.paused  # another replica's operator, on Redis
            self.deliverer.wake()
        return stats

    async def stop(self, grace: float) -> None:
        for task in self._tasks[1:]:
            task.cancel()
        await self.deliverer.stop(grace)
        for task in self._tasks[:1]:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks = []

    # The operator's actions.
    async def pause(self, paused: bool) -> None:
        await self.store.set_paused(self.name, paused)
        self.deliverer.paused = paused
        self.deliverer.wake()
        await self.refresh()

    def view(self) -> dict[str, Any]:
        config = self.config
        return {
            "store": self.store.kind,
            "ready": self.store.ready,
            **self.stats.view(),
            "in_flight": self.deliverer.in_flight,
            "concurrency": config.concurrency,
            "max_messages": config.max_messages,
            "max_attempts": config.max_attempts,
        }


class Queues:
    def __init__(self, clock: Clock, metrics: Metrics, log: JsonLog) -> None:
        self.clock = clock
        self.metrics = metrics
        self.log = log
        self.runners: dict[str, QueueRunner] = {}
        self.stores: dict[str, Store] = {}
        self.routes: dict[str, DeliveryRoute] = {}
        self.started = False
        self.grace = 25.0  # drain.timeout of the config in force
        self.consumer = f"{socket.gethostname()}:{os.getpid()}:{os.urandom(3).hex()}"
        self._background: set[asyncio.Task[None]] = set()
        self._retiring: set[QueueRunner] = set()  # removed by a reload, still draining

    # What the acceptor and the deliverers look up.
    def accepting(self, name: str) -> QueueRunner | None:
        return self.runners.get(name)

    def route(self, name: str) -> DeliveryRoute | None:
        return self.routes.get(name)

    def update(self, config: Config, deliveries: Mapping[str, DeliveryRoute]) -> None:
        """The queues and delivery routes of a generation being swapped in."""
        self.routes = dict(deliveries)
        self.grace = config.drain.timeout
        for name, runner in list(self.runners.items()):
            section = config.queues.get(name)
            if section is None or store_key(section) != runner.store_key:
                del self.runners[name]
                self._retiring.add(runner)
                self._spawn(self._retire(runner))
        for name, section in config.queues.items():
            kept = self.runners.get(name)
            if kept is not None:
                kept.reconfigure(section)
                continue
            runner = self.runners[name] = QueueRunner(name, section, self._store(section), self)
            self._watch(runner)
            if self.started:
                self._spawn(runner.start())

    def _store(self, config: QueueConfig) -> Store:
        key = store_key(config)
        found = self.stores.get(key)
        if found is not None:
            return found
        store: Store
        if store_kind(config.store) == SQLITE:
            assert config.path is not None
            store = SqliteStore(config.path, self.clock)
        else:
            from .redis_store import RedisStore  # imported only when a queue uses Redis

            store = RedisStore(config.store, self.clock, self.consumer)
        store.on_work(self._on_work)
        self.stores[key] = store
        return store

    def _on_work(self, queue: str) -> None:
        runner = self.runners.get(queue)
        if runner is not None:
            runner.deliverer.wake()

    def _watch(self, runner: QueueRunner) -> None:
        metrics, name = self.metrics, runner.name
        metrics.queue_depth.labels(name).set_function(lambda: runner.stats.depth)
        metrics.queue_oldest.labels(name).set_function(lambda: runner.stats.oldest_s)
        metrics.queue_dead.labels(name).set_function(lambda: runner.stats.dead)
        for result in ("delivered", "retried", "dead", "expired"):
            metrics.zero(metrics.deliveries, name, result)
        for result in ("accepted", "duplicate", "full", "unavailable", "too_large"):
            metrics.zero(metrics.queue_accepts, name, result)

    async def _retire(self, runner: QueueRunner) -> None:
        try:
            await runner.stop(self.grace)
        finally:
            self._retiring.discard(runner)
        await self._close_unused()

    async def _close_unused(self) -> None:
        used = {runner.store_key for runner in self.runners.values()}
        for key in [key for key in self.stores if key not in used]:
            await self.stores.pop(key).close()

    def _spawn(self, work: Coroutine[Any, Any, None]) -> None:
        task = asyncio.ensure_future(work)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    # Fender's lifecycle.
    async def start(self) -> None:
        self.started = True
        for runner in list(self.runners.values()):
            await runner.start()

    async def drain(self, grace: float) -> None:
        """Deliveries in flight get `grace`, then go back to their queues."""
        await asyncio.gather(*(runner.stop(grace) for runner in self.runners.values()))

    async def close(self) -> None:
        # A queue a reload retired may still be draining: it stops now too, before its store.
        stopping = [*self.runners.values(), *self._retiring]
        await asyncio.gather(*(runner.stop(0.0) for runner in stopping))
        for task in list(self._background):
            task.cancel()
        for store in self.stores.values():
            await store.close()
        self.started = False

    def status(self) -> dict[str, Any]:
        return {name: runner.view() for name, runner in self.runners.items()}

"""The deliverer of one queue: up to `concurrency` deliveries in flight, each through its
route's real pipeline (timeouts, retry, breaker, bulkhead, quota), until its message is
delivered or a dead letter (verdict.py says which answer means what).

The queue pauses, spending no attempt, when Fender itself turned a delivery away (an
open circuit, a cool-down, a full bulkhead): for the time the rejection gives, then one
delivery at a time (a probe) until one reaches the upstream. An operator's pause
(`POST /queues/NAME/pause`) holds it until resumed. Every delivery has at most
`delivery_timeout`. On stop, deliveries in flight get the grace given (drain.timeout),
then are cancelled and their messages go back to the queue, attempts unspent.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from ..config.queue import Queue as QueueConfig
from ..http.message import FenderError, Rejected, Reply
from ..http.stream import BodyStream
from ..observe.logs import JsonLog
from ..observe.metrics import Metrics
from ..state.clock import Cancellable, Clock
from .message import DONE, FAIL, RELEASE, RETRY, Message, Settlement, attempt_record
from .route import DeliveryRoute
from .store import QueueUnavailable, Store
from .verdict import DELIVERED, PAUSE, Result, judge, next_step

ANSWER_LIMIT = 64 * 1024  # bytes of an answer's body read (then dropped) to reuse the connection


class Deliverer:
    def __init__(
        self,
        name: str,
        config: QueueConfig,
        store: Store,
        routes: Callable[[str], DeliveryRoute | None],
        *,
        clock: Clock,
        metrics: Metrics,
        log: JsonLog,
    ) -> None:
        self.name = name
        self.config = config
        self.store = store
        self.routes = routes
        self.clock = clock
        self.metrics = metrics
        self.log = log
        self.paused = False  # by an operator
        self._active: dict[asyncio.Task[None], bool] = {}  # task -> in its attempt
        self._timed_out: set[asyncio.Task[None]] = set()
        self._cool_until = 0.0  # monotonic: paused by a rejection until then
        self._probing = False
        self._stopping = False
        self._woken = False
        self._wakeup: asyncio.Future[None] | None = None
        self._said_unavailable = False

    @property
    def in_flight(self) -> int:
        return len(self._active)

    def wake(self) -> None:
        self._woken = True
        wakeup = self._wakeup
        if wakeup is not None and not wakeup.done():
            wakeup.set_result(None)

    async def _wait(self, seconds: float | None) -> None:
        if self._woken or self._stopping:
            return
        wakeup = self._wakeup = asyncio.get_running_loop().create_future()
        timer = self.clock.call_later(seconds, self.wake) if seconds is not None else None
        try:
            await wakeup
        finally:
            self._wakeup = None
            if timer is not None:
                timer.cancel()

    async def run(self) -> None:
        while not self._stopping:
            try:
                await self._turn()
            except QueueUnavailable as exc:
                if not self._said_unavailable:
                    self._said_unavailable = True
                    self.log.event("queue_unavailable", "error", queue=self.name, error=str(exc))
                self._woken = False
                await self._wait(1.0)
            except Exception as exc:  # a bug of ours: say so, keep delivering
                self.log.event("internal_error", "error", queue=self.name, error=repr(exc)[:200])
                self._woken = False
                await self._wait(1.0)

    async def _turn(self) -> None:
        self._woken = False
        if self.paused:
            await self._wait(None)
            return
        left = self._cool_until - self.clock.monotonic()
        if left > 0:
            await self._wait(left)
            return
        limit = self.config.concurrency - len(self._active)
        if self._probing:
            limit = min(limit, 1 - len(self._active))
        if limit <= 0:
            await self._wait(None)  # a delivery that ends wakes it
            return
        wall = self.clock.wall()
        messages = await self.store.take(self.name, limit, wall, self.config.delivery_timeout)
        self._said_unavailable = False
        if not messages:
            due = self.store.next_due(self.name)
            wait = None if due is None else max(0.0, due - wall)
            poll = self.store.poll
            if poll is not None:
                wait = poll if wait is None else min(wait, poll)
            await self._wait(wait)
            return
        if self._stopping:  # taken while stop() began: straight back
            for message in messages:
                await self._settle(message, Settlement(RELEASE, due=wall), "")
            return
        for message in messages:
            task = asyncio.ensure_future(self._deliver(message))
            self._active[task] = False
            task.add_done_callback(self._ended)

    def _ended(self, task: asyncio.Task[None]) -> None:
        self._active.pop(task, None)
        self._timed_out.discard(task)
        self.wake()
        if not task.cancelled() and task.exception() is not None:
            error = repr(task.exception())[:200]
            self.log.event("internal_error", "error", queue=self.name, error=error)

    def _cool(self, seconds: float, why: str) -> None:
        until = self.clock.monotonic() + seconds
        if until > self._cool_until:
            if self._cool_until <= self.clock.monotonic():
                self.log.event(
                    "queue_cooling", queue=self.name, reason=why, for_s=round(seconds, 3)
                )
            self._cool_until = until
        self._probing = True

    # One delivery.
    async def _deliver(self, message: Message) -> None:
        config, wall = self.config, self.clock.wall()
        route = self.routes(message.route)
        if wall > message.since + config.max_age or route is None:
            why = "expired" if route is not None else "no_route"
            await self._settle(
                message, Settlement(FAIL, reason=why), why.replace("no_route", "dead")
            )
            self.log.event("dead_letter", "warning", queue=self.name, id=message.id, reason=why)
            return
        task = asyncio.current_task()
        assert task is not None
        self._active[task] = True
        started = self.clock.monotonic()
        try:
            result = await self._attempt(route, message, task)
        except asyncio.CancelledError:
            if not self._stopping:
                raise
            self._active[task] = False
            await self._settle(message, Settlement(RELEASE, due=self.clock.wall()), "")
            return
        self._active[task] = False
        wall = self.clock.wall()
        ms = (self.clock.monotonic() - started) * 1000
        record = attempt_record(wall, result.status, result.reason, ms)
        verdict = judge(result, route.retry_on, wall)
        if verdict.kind == PAUSE:
            self._cool(verdict.wait, verdict.reason)
            await self._settle(message, Settlement(RELEASE, due=wall), "")
            return
        self._probing = False
        if verdict.kind == DELIVERED:
            keep = message.accepted + config.max_age
            await self._settle(message, Settlement(DONE, record, keep_until=keep), "delivered")
            return
        attempts = message.attempts + 1
        step = next_step(verdict, config, attempts, message.since, wall)
        if step.dead:
            result_word = "expired" if step.dead == "expired" else "dead"
            await self._settle(message, Settlement(FAIL, record, reason=step.dead), result_word)
            self.log.event(
                "dead_letter",
                "warning",
                queue=self.name,
                id=message.id,
                route=message.route,
                reason=step.dead,
                status=result.status,
                why=result.reason,
                attempts=attempts,
            )
            return
        await self._settle(message, Settlement(RETRY, record, due=step.due), "retried")

    async def _attempt(
        self, route: DeliveryRoute, message: Message, task: asyncio.Task[None]
    ) -> Result:
        call = route.call(message, self.clock.monotonic())
        timer: Cancellable = self.clock.call_later(
            self.config.delivery_timeout, lambda: self._time_out(task)
        )
        try:
            try:
                reply = await route.handler(call)
            except Rejected as rejected:
                return Result(
                    reason=rejected.reason, rejected=True, retry_after=rejected.retry_after
                )
            except FenderError as failure:
                return Result(reason=failure.reason)
            try:
                broke = await _read_answer(reply)
            finally:
                reply.release()
        except asyncio.CancelledError:
            if task not in self._timed_out:
                raise
            task.uncancel()
            return Result(reason="timeout")
        finally:
            timer.cancel()
        if broke:
            return Result(reason=broke)
        return Result(reply.status, reply.fender_reason, False, reply.outcome, reply.headers)

    def _time_out(self, task: asyncio.Task[None]) -> None:
        if self._active.get(task):
            self._timed_out.add(task)
            task.cancel()

    async def _settle(self, message: Message, settlement: Settlement, counted: str) -> None:
        try:
            await self.store.settle(self.name, message, settlement)
        except QueueUnavailable as exc:
            self.log.event(
                "settle_failed", "error", queue=self.name, id=message.id, error=str(exc)[:200]
            )
            return
        if counted:
            self.metrics.count_delivery(self.name, counted)

    # Stopping.
    async def stop(self, grace: float) -> None:
        """No new deliveries; those in flight get `grace` seconds, then go back."""
        self._stopping = True
        self.wake()
        active = set(self._active)
        if active and grace > 0:
            _, active = await asyncio.wait(active, timeout=grace)
        for task in active:
            if self._active.get(task):
                task.cancel()
        if active:
            await asyncio.wait(active, timeout=10.0)


async def _read_answer(reply: Reply) -> str:
    """Read (and drop) what the answer's body holds; the reason it broke off, or ""."""
    body: Any = reply.body
    if not isinstance(body, BodyStream):
        return ""
    whole = await body.read(ANSWER_LIMIT)
    if whole is None and body.failed:
        return body.failed
    if whole is None:
        body.discard()  # larger than we care for: the connection is closed instead
    return ""

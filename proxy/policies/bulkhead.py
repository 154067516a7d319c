"""Bulkhead: at most `max_concurrent` attempts in flight to one upstream.

A slot is held until the answer's body is fully relayed (a stream holds it to its end),
so it bounds what the upstream really carries. Beyond the limit, up to `max_queued`
attempts wait in line (FIFO) for `queue_timeout`, never past the request's deadline;
the rest are answered at once: 503 `bulkhead_full`. So is a half-open probe that finds
no free slot: it must not wait in line while it holds the circuit's only permit.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from collections.abc import Callable

from ..config.upstream import Bulkhead as BulkheadConfig
from ..http.message import Call, Handler, Rejected, Reply
from ..observe.metrics import Metrics
from ..state.clock import Clock


class Bulkhead:
    def __init__(
        self, config: BulkheadConfig, upstream: str, clock: Clock, metrics: Metrics
    ) -> None:
        self.max_concurrent = config.max_concurrent
        self.max_queued = config.max_queued
        self.queue_timeout = config.queue_timeout
        self.upstream = upstream
        self.clock = clock
        self.metrics = metrics
        self.in_flight = 0
        self._waiters: deque[asyncio.Future[None]] = deque()

    @property
    def queued(self) -> int:
        return len(self._waiters)

    async def __call__(self, call: Call, call_next: Handler) -> Reply:
        if self.in_flight < self.max_concurrent and not self._waiters:
            self.in_flight += 1  # a free slot: no waiting, no await
        elif call.probe:
            self._reject(call)
        else:
            await self._acquire(call)
        try:
            reply = await call_next(call)
        except BaseException:
            self._release()
            raise
        reply.release = _once(reply.release, self._release)
        return reply

    async def _acquire(self, call: Call) -> None:
        wait = min(self.queue_timeout, call.deadline - self.clock.monotonic())
        if len(self._waiters) >= self.max_queued or wait <= 0:
            self._reject(call)
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        timer = self.clock.call_later(wait, lambda: _expire(waiter))
        try:
            await waiter
        except TimeoutError:
            self._leave(waiter)
            self._reject(call)
        except BaseException:
            self._leave(waiter)
            raise
        finally:
            timer.cancel()

    def _leave(self, waiter: asyncio.Future[None]) -> None:
        """A waiter gives up; if a slot was handed to it meanwhile, pass it on."""
        if waiter.done() and not waiter.cancelled() and waiter.exception() is None:
            self._release()
        else:
            waiter.cancel()
            with contextlib.suppress(ValueError):
                self._waiters.remove(waiter)

    def _release(self) -> None:
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)  # the slot goes straight to the next in line
                return
        self.in_flight -= 1

    def _reject(self, call: Call) -> None:
        self.metrics.count_rejection(call.route, "bulkhead_full")
        raise Rejected(
            "bulkhead_full",
            f"upstream {self.upstream} has {self.in_flight} attempts in flight "
            f"and {len(self._waiters)} waiting",
            retry_after=1.0,
        )


def _expire(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():
        waiter.set_exception(TimeoutError())


def _once(first: Callable[[], None], then: Callable[[], None]) -> Callable[[], None]:
    """Release the upstream response, then the slot; safe to call more than once."""
    done = False

    def release() -> None:
        nonlocal done
        if not done:
            done = True
            first()
            then()

    return release

"""The link to Redis: a redis.asyncio client, every request's call bounded by
`redis.timeout`, a breaker of its own, and reconnects with backoff.

A request never runs redis-py itself (its pipeline has no Task: see http/pending.py, and
redis.asyncio needs one). It queues a script call with `call()` and awaits a plain
future. The calls queued within one turn of the event loop make a batch; SENDERS
long-lived tasks, each holding a connection of redis-py's pool, send every batch ready as
one pipeline and read the replies. Each decision is still one EVALSHA answered in one
round trip, and under load many share that round trip and its system calls: redis-py
costs about 75 µs of CPU for a lone command through its client API, 45 µs on a held
connection, 16 µs per command in a pipeline of 64. A timer per batch settles every future
still waiting at `redis.timeout` with UNAVAILABLE: the caller decides locally, and the
late answer is dropped. Nothing here raises into a request.

Scripts are loaded once (SCRIPT LOAD) and called by EVALSHA; a NOSCRIPT answer (Redis
restarted or flushed its scripts) loads them again and resends what it refused.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import math
from collections import deque
from collections.abc import Callable, Sequence
from typing import Any

from ..config.fleet import Redis, redacted_url
from ..observe.logs import JsonLog
from ..state.clock import Cancellable, Clock
from ..state.link_breaker import DOWN, UP, LinkBreaker

UNAVAILABLE: Any = object()  # what a call settles with when Redis did not answer in time
SENDERS = 2  # pipelines out at once, each on its own connection; the rest gather
CONNECT_WAIT = 1.0  # a probe may take this long to (re)connect, TLS included
TIMER_SLACK = 0.001
Arg = str | bytes | int | float


def bulk(value: bytes) -> bytes:
    """One RESP bulk string."""
    return b"$%d\r\n%s\r\n" % (len(value), value)


def encode(value: Arg) -> bytes:
    if isinstance(value, bytes):
        return value
    if isinstance(value, str):
        return value.encode()
    return b"%d" % value if isinstance(value, int) else repr(value).encode()


def frame(*parts: Arg) -> bytes:
    """One command as Redis reads it (RESP). Made here, not by redis-py's packer: that
    one took half of a global decision's CPU."""
    return b"*%d\r\n" % len(parts) + b"".join(bulk(encode(part)) for part in parts)


class Script:
    """A Lua script, known by its SHA1 so that it is called with EVALSHA."""

    __slots__ = ("sha", "source")

    def __init__(self, source: str) -> None:
        self.source = source
        self.sha = hashlib.sha1(source.encode(), usedforsecurity=False).hexdigest()


class _Batch:
    __slots__ = ("commands", "deadline", "expired", "futures", "timer")

    def __init__(self, deadline: float) -> None:
        self.deadline = deadline  # loop time past which nobody waits for its answers
        self.commands: list[bytes] = []  # RESP frames
        self.futures: list[asyncio.Future[Any]] = []
        self.timer: Cancellable | None = None
        self.expired = False


class Link:
    """One Redis, shared by every fleet feature of a process."""

    def __init__(self, config: Redis, clock: Clock, log: JsonLog) -> None:
        self.config = config
        self.timeout = config.timeout
        # The event loop's timers fire up to a millisecond late (libuv counts whole
        # milliseconds): aim that much early, so that no request waits past the timeout.
        self._bound = max(0.0005, config.timeout - TIMER_SLACK)
        self.clock = clock
        self.log = log
        self.where = redacted_url(config.url)
        # redis-py takes a quarter of a second to import: only a file with `redis:` pays.
        import redis.asyncio as aioredis
        from redis.asyncio.retry import Retry
        from redis.backoff import NoBackoff
        from redis.exceptions import NoScriptError, RedisError, ResponseError

        self.errors: tuple[type[BaseException], ...] = (TimeoutError, RedisError, OSError)
        self._noscript = NoScriptError
        self._response_error = ResponseError
        self._socket_timeout = max(CONNECT_WAIT, 4 * config.timeout)  # a late answer ends
        options: dict[str, Any] = {}
        if config.password is not None:
            options["password"] = config.password
        self.client = aioredis.from_url(
            config.url,
            socket_timeout=self._socket_timeout,
            socket_connect_timeout=CONNECT_WAIT,
            retry=Retry(NoBackoff(), 0),  # the breaker decides when to try again
            **options,
        )
        self.breaker = LinkBreaker(clock, self._changed)
        self.scripts: dict[str, Script] = {}
        self.round_trips = 0  # pipelines sent (for /status and the benchmark)
        self.commands = 0
        self._pending: _Batch | None = None  # gathering calls in this turn of the loop
        self._ready: deque[_Batch] = deque()  # waiting for a sender
        self._idle: list[asyncio.Future[None]] = []  # senders waiting for work
        self._loop: asyncio.AbstractEventLoop | None = None
        self._down = asyncio.Event()
        self._prober: asyncio.Task[None] | None = None
        self._tasks: set[asyncio.Task[Any]] = set()

    @property
    def up(self) -> bool:
        return self.breaker.up

    def register(self, source: str) -> Script:
        script = Script(source)
        self.scripts[script.sha] = script
        return script

    def call(
        self, script: Script, keys: Sequence[str], args: Sequence[Arg]
    ) -> asyncio.Future[Any] | None:
        """Queue one script call; None when the link is down (decide locally, now)."""
        return self.send(frame("EVALSHA", script.sha, len(keys), *keys, *args))

    def send(self, command: bytes) -> asyncio.Future[Any] | None:
        """Queue one command, framed already (the hot path frames its own); None when the
        link is down."""
        loop = self._loop
        if loop is None or not self.breaker.up:
            return None
        batch = self._pending
        if batch is None:
            batch = self._pending = _Batch(loop.time() + self._bound)
            batch.timer = self.clock.call_later(self._bound, lambda: self._expire(batch))
            loop.call_soon(self._flush)
        future: asyncio.Future[Any] = loop.create_future()
        batch.commands.append(command)
        batch.futures.append(future)
        return future

    def _flush(self) -> None:
        batch, self._pending = self._pending, None
        if batch is None or batch.expired:
            return
        self._ready.append(batch)
        while self._idle:  # wake one sender (busy ones take it when they are done)
            waiter = self._idle.pop()
            if not waiter.done():
                waiter.set_result(None)
                break

    def _expire(self, batch: _Batch) -> None:
        batch.expired = True
        if self._pending is batch:
            self._pending = None
        for future in batch.futures:
            if not future.done():
                future.set_result(UNAVAILABLE)
        self.breaker.failed(f"no answer within {self.timeout * 1000:g}ms")

    async def _sender(self) -> None:
        """One of SENDERS tasks, each on a connection of its own: it takes every batch
        ready, sends them as one pipeline, and settles their futures. While it waits for
        Redis, what comes in gathers into the next pipeline."""
        assert self._loop is not None
        pool, conn = self.client.connection_pool, None
        while True:
            if not self._ready:
                waiter: asyncio.Future[None] = self._loop.create_future()
                self._idle.append(waiter)
                await waiter
                continue
            batches = [batch for batch in self._ready if not batch.expired]
            self._ready.clear()
            if not batches:
                continue
            replies: list[Any] | None = None
            try:
                # Nobody waits past the last batch's deadline: then the connection, with
                # its late answers still coming, is dropped, and the next batch has a
                # fresh one instead of queueing behind a slow Redis.
                async with asyncio.timeout_at(max(batch.deadline for batch in batches)):
                    conn = conn or await pool.get_connection()  # type: ignore[no-untyped-call]
                    commands = [command for batch in batches for command in batch.commands]
                    replies = await self._round_trip(conn, commands)
            except Exception as exc:  # whatever redis-py or the socket raised
                if conn is not None:  # a fresh connection next time
                    with contextlib.suppress(Exception):
                        await conn.disconnect()
                    await pool.release(conn)
                    conn = None
                if not all(batch.expired for batch in batches):
                    self.breaker.failed(_why(exc))
            else:
                if not all(batch.expired for batch in batches):  # a late answer is no proof
                    self.breaker.succeeded()
            self._settle(batches, replies)

    def _settle(self, batches: list[_Batch], replies: list[Any] | None) -> None:
        i = 0
        for batch in batches:
            if batch.timer is not None:
                batch.timer.cancel()
            for future in batch.futures:
                reply = replies[i] if replies is not None else UNAVAILABLE
                i += 1
                if not future.done():
                    future.set_result(UNAVAILABLE if isinstance(reply, Exception) else reply)

    async def _round_trip(self, conn: Any, commands: list[bytes]) -> list[Any]:
        """Send, then read every reply (an error reply stays in its place), all within one
        socket timeout; NOSCRIPT: load the scripts and send again what Redis refused."""
        replies = await self._exchange(conn, commands)
        refused = [i for i, reply in enumerate(replies) if isinstance(reply, self._noscript)]
        if refused:
            loads = [frame("SCRIPT", "LOAD", s.source) for s in self.scripts.values()]
            again = await self._exchange(conn, loads + [commands[i] for i in refused])
            for i, reply in zip(refused, again[len(loads) :], strict=True):
                replies[i] = reply
        return replies

    async def _exchange(self, conn: Any, commands: list[bytes]) -> list[Any]:
        self.round_trips += 1
        self.commands += len(commands)
        replies: list[Any] = []
        await conn.send_packed_command(b"".join(commands), check_health=False)
        for _ in commands:  # no timeout of redis-py's per reply: the caller's covers all
            try:
                replies.append(await conn.read_response(timeout=math.inf))
            except self._response_error as error:
                replies.append(error)
        return replies

    async def _execute(self, commands: list[tuple[Arg, ...]]) -> list[Any]:
        self.round_trips += 1
        self.commands += len(commands)
        pipe = self.client.pipeline(transaction=False)
        for command in commands:
            pipe.execute_command(*command)
        replies: list[Any] = await pipe.execute(raise_on_error=False)
        return replies

    async def start(self) -> None:
        """Connect (bounded: Fender starts whatever Redis does) and watch the link."""
        if self._loop is not None:
            return
        self._loop = asyncio.get_running_loop()
        why = await self._probe()
        if why is not None:
            self._changed(DOWN, why)  # said once; then probed with backoff
        self._prober = asyncio.ensure_future(self._probe_while_down())
        for _ in range(SENDERS):
            self._spawn(self._sender())

    async def _probe(self) -> str | None:
        """Up when a PING answers within the timeout (after a connect allowed longer);
        else why not."""
        try:
            await asyncio.wait_for(self.client.ping(), CONNECT_WAIT)  # (re)connects
            await asyncio.wait_for(self.client.ping(), self.timeout)
            load: list[tuple[Arg, ...]] = [
                ("SCRIPT", "LOAD", s.source) for s in self.scripts.values()
            ]
            if load:  # now, rather than on the first request's NOSCRIPT
                await asyncio.wait_for(self._execute(load), CONNECT_WAIT)
        except self.errors as exc:
            self.breaker.probe_failed()
            return _why(exc)
        self.breaker.succeeded()
        return None

    async def _probe_while_down(self) -> None:
        while True:
            if self.breaker.up:
                await self._down.wait()
                self._down.clear()
            await self.clock.sleep(self.breaker.probe_in())
            if not self.breaker.up:
                await self._probe()

    def _changed(self, to: str, why: str) -> None:
        level = "info" if to == UP else "warning"
        self.log.event("redis", level, state=to, redis=self.where, why=why)
        if to == DOWN:
            self._down.set()

    def _spawn(self, work: Any) -> None:
        task = asyncio.ensure_future(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def run(self, work: Callable[[], Any]) -> None:
        """Run a coroutine of the fleet's background work (not a request's) as a task."""
        self._spawn(work())

    async def close(self) -> None:
        if self._prober is not None:
            self._prober.cancel()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._pending is not None and self._pending.timer is not None:
            self._pending.timer.cancel()
        with contextlib.suppress(*self.errors):  # a Redis that is gone
            await asyncio.wait_for(self.client.aclose(), CONNECT_WAIT)
        self._loop = None


def _why(exc: BaseException) -> str:
    """The kind of failure, in a few words; never a URL or a password."""
    if isinstance(exc, asyncio.TimeoutError):
        return "timeout"
    return type(exc).__name__

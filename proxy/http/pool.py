"""An upstream's keep-alive connections: per endpoint, at most `max_connections` open.

Idle connections are reused most recent first (the one least likely to have been closed
by the upstream meanwhile) and closed after `idle_timeout`, shorter than common upstream
keep-alive timeouts. At the limit, an attempt waits for a connection to come free, but
never longer than its `connect` timeout: a pool held by slow requests is a
`connect_error`, not a hang.
"""

from __future__ import annotations

import asyncio
import ssl
from collections import deque
from dataclasses import dataclass

from .connection import CLOSED, CONNECTING, IDLE, UpstreamConnection
from .message import UpstreamFailed


@dataclass(frozen=True, slots=True)
class Target:
    """Where an endpoint's connections go."""

    host: str
    port: int
    tls: ssl.SSLContext | None
    sni: str | None


class Pool:
    def __init__(
        self,
        name: str,
        targets: dict[str, Target],
        *,
        max_connections: int,
        idle_timeout: float,
        limits: tuple[int, int],
        loop: asyncio.AbstractEventLoop,
    ) -> None:
        self.name = name
        self.targets = targets
        self.max_connections = max_connections
        self.idle_timeout = idle_timeout
        self.limits = limits
        self.loop = loop
        self.idle: dict[str, list[UpstreamConnection]] = {label: [] for label in targets}
        self.open = 0  # connections counted against the limit (connecting ones too)
        self.connections: set[UpstreamConnection] = set()  # connected, idle or busy
        self.closed = False
        self._waiters: deque[asyncio.Future[None]] = deque()

    def take(self, endpoint: str) -> UpstreamConnection | None:
        """An idle connection to `endpoint`, if there is one (no waiting)."""
        idle = self.idle[endpoint]
        while idle:
            conn = idle.pop()
            if conn.state == IDLE and not conn.transport.is_closing():  # type: ignore[union-attr]
                return conn
        return None

    async def connection(self, endpoint: str, wait: float | None) -> UpstreamConnection:
        """An idle connection or a new one, waiting at most `wait` for either."""
        deadline = None if wait is None else self.loop.time() + wait
        while True:
            conn = self.take(endpoint)
            if conn is not None:
                return conn
            if self.open < self.max_connections:
                return await self._connect(endpoint, deadline)
            # At the limit: close one idle connection to another endpoint (if any) and
            # wait for a slot; its loss wakes us. One, not all: `open` falls only then.
            self._close_an_idle_one()
            await self._wait(deadline)

    def put(self, conn: UpstreamConnection) -> None:
        """An exchange ended cleanly: the connection may serve another."""
        if self.closed:
            conn.close()
            return
        self.idle[conn.endpoint].append(conn)
        conn.alarm.set(self.loop.time() + self.idle_timeout)  # it closes if idle so long
        if self._waiters:
            self._wake()

    def lost(self, conn: UpstreamConnection) -> None:
        """A connection closed (whatever closed it)."""
        self.open -= 1
        self.connections.discard(conn)
        idle = self.idle.get(conn.endpoint)
        if idle is not None and conn in idle:
            idle.remove(conn)
        self._wake()

    async def close(self, *, busy_too: bool = False) -> None:
        """Close idle connections now; busy ones close when their exchange ends, or now
        too (`busy_too`: Fender itself stops)."""
        self.closed = True
        for idle in self.idle.values():
            for conn in idle:
                conn.close()
            idle.clear()
        if busy_too:
            for conn in list(self.connections):
                conn.abort()
        for waiter in self._waiters:
            if not waiter.done():
                waiter.set_result(None)

    async def _connect(self, endpoint: str, deadline: float | None) -> UpstreamConnection:
        target, loop = self.targets[endpoint], self.loop
        conn = UpstreamConnection(self, endpoint, loop, self.limits)
        self.open += 1
        task = loop.create_task(
            loop.create_connection(
                lambda: conn,
                target.host,
                target.port,
                ssl=target.tls,
                server_hostname=target.sni,
            )
        )
        expired: list[bool] = []
        timer = None
        if deadline is not None:
            timer = loop.call_at(deadline, _expire, task, expired)
        try:
            await task
        except asyncio.CancelledError:
            self._failed_connect(conn)
            if expired:
                why = self._why(endpoint, "connect timed out")
                raise UpstreamFailed("connect_error", why) from None
            raise
        except ssl.SSLError as exc:
            self._failed_connect(conn)
            why = getattr(exc, "verify_message", None) or exc.reason or "TLS handshake failed"
            raise UpstreamFailed("tls_error", self._why(endpoint, str(why))) from None
        except OSError as exc:
            self._failed_connect(conn)
            why = exc.strerror or type(exc).__name__
            raise UpstreamFailed("connect_error", self._why(endpoint, why)) from None
        finally:
            if timer is not None:
                timer.cancel()
        if conn.state == CLOSED:
            raise UpstreamFailed("connect_error", self._why(endpoint, "closed at once"))
        self.connections.add(conn)
        return conn

    def _failed_connect(self, conn: UpstreamConnection) -> None:
        if conn.state != CONNECTING:  # it had a transport (a TLS handshake gave up):
            conn.abort()  # its connection_lost frees the slot, once
            return
        self.open -= 1
        self._wake()

    def _close_an_idle_one(self) -> bool:
        """At the limit with idle connections to other endpoints: free a slot."""
        for idle in self.idle.values():
            if idle:
                idle.pop(0).close()
                return True
        return False

    async def _wait(self, deadline: float | None) -> None:
        waiter: asyncio.Future[None] = self.loop.create_future()
        self._waiters.append(waiter)
        timer = None
        if deadline is not None:
            timer = self.loop.call_at(deadline, _timeout, waiter)
        try:
            await waiter
        except TimeoutError:
            raise UpstreamFailed(
                "connect_error",
                f"upstream {self.name}: all {self.max_connections} connections stayed busy "
                "for the whole connect timeout",
            ) from None
        finally:
            if timer is not None:
                timer.cancel()
            if waiter in self._waiters:
                self._waiters.remove(waiter)

    def _wake(self) -> None:
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
                return

    def _why(self, endpoint: str, what: str) -> str:
        return f"upstream {self.name} ({endpoint}): {what}"


def _expire(task: asyncio.Task[object], expired: list[bool]) -> None:
    expired.append(True)
    task.cancel()


def _timeout(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():
        waiter.set_exception(TimeoutError())

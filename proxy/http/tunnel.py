"""An Upgrade tunnel (WebSocket): after the upstream's 101, bytes both ways, untouched.

Each side's writes throttle the other side's reads (a slow reader pauses its peer), so a
tunnel holds bounded memory whatever the two ends do. `idle` cuts a tunnel silent in both
directions for that long, `total` caps its life; a drain gives it `drain.timeout`. It
counts as one request, with its outcome, when it ends; the bulkhead slot of its
handshake is held until then.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .alarm import Alarm
from .message import INF

if TYPE_CHECKING:
    from .connection import UpstreamConnection
    from .exchange import Exchange
    from .server import ServerConnection


class Tunnel:
    __slots__ = (
        "alarm",
        "app",
        "closed",
        "exchange",
        "idle",
        "last",
        "sent",
        "stats",
        "total",
        "up",
    )

    def __init__(self, app: ServerConnection, up: UpstreamConnection, exchange: Exchange) -> None:
        self.app, self.up, self.exchange = app, up, exchange
        call = exchange.call
        assert call is not None
        self.idle = call.idle
        self.total = call.stream_deadline
        self.closed = False
        self.stats = app.listener.metrics.tunnel(exchange.route)
        self.stats.opened()
        loop = app.loop
        self.last = loop.time()
        self.sent = [0, 0]  # bytes: app to upstream, upstream to app
        self.alarm = Alarm(loop, self._timed_out)
        self._arm()
        up.tunnel = self
        if exchange.leftover:  # what the app sent right behind its Upgrade request
            self.from_app(exchange.leftover)
        if up.leftover:  # what the upstream sent right behind its 101
            self.from_upstream(up.leftover)
        app.closing = True  # nothing but this tunnel will ever use the app's connection
        app.resume_reading_for_tunnel()
        if app.write_paused:  # either side still full from before: its peer waits
            self.app_full()
        if up.write_paused:
            self.upstream_full()

    def _arm(self) -> None:
        due = INF if self.idle is None else self.last + self.idle
        due = min(due, self.total)
        if due != INF:
            self.alarm.set(due)

    def from_app(self, data: bytes) -> None:
        transport = self.up.transport
        if transport is not None and not self.closed:
            self.last = self.app.loop.time()
            self.sent[0] += len(data)
            transport.write(data)

    def from_upstream(self, data: bytes) -> None:
        if not self.closed:
            self.last = self.app.loop.time()
            self.sent[1] += len(data)
            self.app.write(data)

    # Backpressure: a side that cannot take more pauses its peer's reading.
    def app_full(self) -> None:
        if self.up.transport is not None:
            self.up.transport.pause_reading()

    def app_ready(self) -> None:
        if self.up.transport is not None and not self.closed:
            self.up.transport.resume_reading()

    def upstream_full(self) -> None:
        if self.app.transport is not None:
            self.app.transport.pause_reading()

    def upstream_ready(self) -> None:
        if self.app.transport is not None and not self.closed:
            self.app.transport.resume_reading()

    # Endings.
    def app_closed(self) -> None:
        self._end("ok", "", abort=False)

    def upstream_closed(self, exc: Exception | None) -> None:
        if exc is None:
            self._end("ok", "", abort=False)
        else:
            self._end("failed", "reset", abort=True)

    def cut(self, reason: str) -> None:
        """Fender ends it (a drain past its timeout)."""
        self._end("cancelled", reason, abort=True)

    def _timed_out(self) -> None:
        now = self.app.loop.time()
        due = min(INF if self.idle is None else self.last + self.idle, self.total)
        if now < due:
            self.alarm.set(due)
            return
        self._end("failed", "timeout", abort=True)

    def _end(self, outcome: str, reason: str, *, abort: bool) -> None:
        if self.closed:
            return
        self.closed = True
        self.alarm.cancel()
        self.stats.closed(self.sent[0], self.sent[1])
        for side in (self.app, self.up):
            if abort:
                side.abort()
            else:
                side.close()
        exchange = self.exchange
        exchange.outcome, exchange.reason = outcome, reason
        exchange.finish_tunnel()

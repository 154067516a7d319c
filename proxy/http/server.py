"""The app's side of the wire: one protocol object per connection, parsed by llhttp.

Requests on a connection are answered one at a time, in order; pipelined ones wait their
turn (reading pauses meanwhile). A request starts once its head and whatever of its body
came with it have been parsed, so a small body is whole by then. One alarm per
connection (see alarm.py) bounds each phase: the head must arrive within
`header_timeout` of its first byte, a request body may pause at most `body_timeout`
between reads, an idle keep-alive connection lives `idle_timeout`.
"""

from __future__ import annotations

import asyncio
from collections import deque
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, cast

from httptools import HttpParserError, HttpParserUpgrade, HttpRequestParser

from ..config.model import Limits
from ..observe.metrics import NO_ROUTE, Metrics
from .alarm import Alarm
from .codec import error_reply, response_head
from .exchange import Exchange
from .hygiene import IdSource
from .message import FenderError, Rejected
from .request import WATCHED, read_watched
from .stream import BodyStream

if TYPE_CHECKING:
    from ..observe.logs import JsonLog
    from ..state.clock import Clock
    from .routing import Routing
    from .tunnel import Tunnel

_METHODS = {m.encode(): m for m in ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")}
WRITE_HIGH_WATER = 256 * 1024


@dataclass(eq=False)
class Listener:
    """What every connection of one listener shares; a reload swaps `routing`."""

    name: str
    routing: Routing
    limits: Limits
    metrics: Metrics
    log: JsonLog
    clock: Clock
    access_log: bool
    draining: bool = False
    ids: IdSource = field(default_factory=IdSource)
    connections: set[ServerConnection] = field(default_factory=set)
    emptied: asyncio.Future[None] | None = None  # a drain waits for the last connection

    def protocol(self) -> ServerConnection:
        return ServerConnection(self)


class ServerConnection(asyncio.Protocol):
    __slots__ = (
        "_paused",
        "alarm",
        "body_read",
        "client_ip",
        "closing",
        "gone",
        "head_size",
        "head_started",
        "idle_since",
        "listener",
        "loop",
        "parser",
        "queue",
        "reading",
        "serving",
        "streaming",
        "transport",
        "tunnel",
        "write_paused",
    )

    def __init__(self, listener: Listener) -> None:
        self.listener = listener
        self.loop = asyncio.get_running_loop()
        self.transport: asyncio.Transport | None = None
        self.parser = HttpRequestParser(self)
        # Accept any HTTP/1.x version in the request line; exchange.py answers others 505.
        self.parser.set_dangerous_leniencies(lenient_version=True)
        self.alarm = Alarm(self.loop, self._alarm)
        self.client_ip: str | None = None
        self.reading: Exchange | None = None  # the request being parsed
        self.serving: Exchange | None = None  # the request being answered
        self.queue: deque[Exchange] = deque()  # parsed and waiting their turn
        self.streaming: BodyStream | None = None  # the answer's body, relayed now
        self.tunnel: Tunnel | None = None
        self.head_size = 0  # bytes of the head being read
        self.head_started = 0.0  # loop time the head being read began to arrive
        self.body_read = 0.0  # loop time a request body was last read
        self.idle_since = 0.0
        self.closing = False  # close once the current answer is out
        self.gone = False
        self.write_paused = False  # the app's transport is over its high-water mark
        self._paused = 0  # reasons reading is paused: 1 pipelined, 2 body backpressure

    # asyncio's side.
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's are not subclasses
        self.transport.set_write_buffer_limits(WRITE_HIGH_WATER)
        peer = self.transport.get_extra_info("peername")
        self.client_ip = peer[0] if peer else None
        self.listener.connections.add(self)
        self._idle()

    def connection_lost(self, exc: Exception | None) -> None:
        self.gone = True
        self.alarm.cancel()
        listener = self.listener
        listener.connections.discard(self)
        emptied = listener.emptied
        if not listener.connections and emptied is not None and not emptied.done():
            emptied.set_result(None)
        if self.tunnel is not None:
            self.tunnel.app_closed()
        for exchange in (self.serving, self.reading, *self.queue):
            if exchange is not None and exchange is not self.serving:
                body = exchange.body
                if body is not None and not body.finished:
                    body.abort("client_closed")
        self.queue.clear()
        if self.serving is not None:
            self.serving.gone()

    def pause_writing(self) -> None:
        self.write_paused = True  # kept: a stream that starts later must see it
        if self.streaming is not None:
            self.streaming.pause()
        elif self.tunnel is not None:
            self.tunnel.app_full()

    def resume_writing(self) -> None:
        self.write_paused = False
        if self.streaming is not None:
            self.streaming.resume()
        elif self.tunnel is not None:
            self.tunnel.app_ready()

    def data_received(self, data: bytes) -> None:
        if self.tunnel is not None:
            self.tunnel.from_app(data)
            return
        try:
            self.parser.feed_data(data)
        except HttpParserUpgrade as upgrade:  # the rest is not HTTP: a tunnel, or nothing
            self._pause(1)
            self.closing = True
            if self.queue:
                self.queue[-1].leftover = data[upgrade.args[0] :]
        except HttpParserError as exc:
            if (self.queue or self.serving) and "after `Connection: close`" in str(exc):
                # RFC 9112 section 9.6: the app said close; what follows is not read.
                self.closing = True
                self._pause(1)
                self.reading = None
            else:
                self._malformed(exc)
                return
        reading = self.reading
        if reading is not None:
            self._unfinished(reading, len(data))
        if self.serving is None and self.queue:
            self._next()

    def _unfinished(self, reading: Exchange, size: int) -> None:
        """A request still arriving after this read: bound the wait for the rest."""
        limits, now = self.listener.limits, self.loop.time()
        if not reading.headed:
            self.head_size += size
            most = limits.max_request_line + limits.max_headers * limits.max_header_size
            if self.head_size > most:
                self._malformed(None, "the request head is too large")
                return
            if self._paused & 1:
                return  # pipelined: its clock starts when its turn does (see _resume)
            if not self.head_started:
                self.head_started = now
            self.alarm.set(self.head_started + limits.header_timeout)
        elif reading.body is not None and not self._paused:
            self.body_read = now
            self.alarm.set(now + limits.body_timeout)

    # llhttp's callbacks.
    def on_message_begin(self) -> None:
        self.reading = Exchange(self)
        self.head_size = 0
        self.head_started = 0.0

    def on_url(self, url: bytes) -> None:
        self.reading.url += url  # type: ignore[union-attr]

    def on_header(self, name: bytes, value: bytes) -> None:
        exchange = self.reading
        assert exchange is not None
        if exchange.headed:
            return  # a trailer of a chunked body: never merged into the head (RFC 9110 6.5.1)
        exchange.keys.append(name.lower())
        exchange.lines.append(name + b": " + value)

    def on_headers_complete(self) -> None:
        exchange = self.reading
        assert exchange is not None
        exchange.headed = True
        limits, keys, lines = self.listener.limits, exchange.keys, exchange.lines
        if len(exchange.url) > limits.max_request_line:
            raise ValueError("the request line is too long")
        if len(keys) > limits.max_headers:
            raise ValueError("too many headers")
        if keys and max(map(len, lines)) > limits.max_header_size:
            raise ValueError("a header line is too long")
        watched = WATCHED.intersection(keys)
        if watched:
            read_watched(exchange, watched)
        parser = self.parser
        method = parser.get_method()
        exchange.method = _METHODS.get(method) or method.decode("ascii")
        exchange.version = parser.get_http_version()
        exchange.keep_alive = parser.should_keep_alive()
        if exchange.upgrade is not None and not parser.should_upgrade():
            exchange.upgrade = None
        if exchange.encodings or exchange.length:
            exchange.body = BodyStream(self, exchange.length)
        self.queue.append(exchange)
        if self.serving is not None or len(self.queue) > 1:
            self._pause(1)  # pipelined: its turn comes after the answer before it

    def on_body(self, body: bytes) -> None:
        exchange = self.reading
        assert exchange is not None and exchange.body is not None
        exchange.body.feed(body)

    def on_message_complete(self) -> None:
        exchange = self.reading
        assert exchange is not None
        self.reading = None
        exchange.complete = True
        if exchange.body is not None:
            exchange.body.finish()

    # Requests, one after the other.
    def _next(self) -> None:
        exchange = self.queue.popleft()
        self.serving = exchange
        if self._paused & 1 and not self.queue and not self.closing:
            self._resume(1)  # (never after an Upgrade or a close: what follows is not read)
        exchange.begin()

    def finished(self, exchange: Exchange) -> None:
        """The answer is out (or given up): the next request, or keep-alive idleness."""
        if self.serving is exchange:
            self.serving = None
        if self.gone:
            return
        if exchange.close or self.closing or self.listener.draining:
            self.close()
            return
        if self.queue:
            self.loop.call_soon(self._next_if_idle)
        elif self.reading is None:
            self._idle()

    def _next_if_idle(self) -> None:
        if self.serving is None and self.queue and not self.gone:
            self._next()

    def _idle(self) -> None:
        self.idle_since = now = self.loop.time()
        self.alarm.set(now + self.listener.limits.idle_timeout)

    def _alarm(self) -> None:
        """The alarm rang: see which phase is late, if any (it rings for the earliest)."""
        limits, now = self.listener.limits, self.loop.time()
        reading = self.reading
        if reading is not None and not reading.headed:
            if self._paused & 1:
                return  # Fender holds it back, not the app
            due = self.head_started + limits.header_timeout
            if now >= due:
                self.close()  # a head that trickles in (slowloris)
                return
            self.alarm.set(due)
        elif reading is not None and reading.body is not None:
            if self._paused:
                return  # the upstream holds the body back, not the app
            due = self.body_read + limits.body_timeout
            if now >= due:
                reading.body.abort("body_timeout")  # the app stopped sending its body
                if reading is not self.serving:  # its request was answered already
                    self.close()
                return
            self.alarm.set(due)
        elif self.serving is None and not self.queue:
            due = self.idle_since + limits.idle_timeout
            if now >= due:
                self.close()  # idle keep-alive
                return
            self.alarm.set(due)

    # The request body's source.
    def pause_body(self) -> None:
        self._pause(2)

    def resume_body(self) -> None:
        self._resume(2)

    def abandon_body(self) -> None:
        self.closing = True  # the rest of the body is not read: no next request on it

    def resume_reading_for_tunnel(self) -> None:
        self._resume(1)

    def _pause(self, why: int) -> None:
        if not self._paused and self.transport is not None:
            self.transport.pause_reading()
        self._paused |= why

    def _resume(self, why: int) -> None:
        self._paused &= ~why
        if not self._paused and self.transport is not None and not self.gone:
            self.transport.resume_reading()
            reading = self.reading
            if reading is not None and reading.headed and reading.body is not None:
                self.body_read = now = self.loop.time()
                self.alarm.set(now + self.listener.limits.body_timeout)
            elif reading is not None and not reading.headed:  # a head held back: its turn
                self.head_started = now = self.loop.time()
                self.alarm.set(now + self.listener.limits.header_timeout)

    # Writing.
    def write(self, data: bytes) -> None:
        if self.transport is not None and not self.gone:
            self.transport.write(data)

    def tunnel_to(self, upstream: Any, exchange: Exchange) -> None:
        from .tunnel import Tunnel

        self.alarm.cancel()
        self.tunnel = Tunnel(self, upstream, exchange)

    def close(self) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.close()

    def abort(self) -> None:
        if self.transport is not None:
            self.transport.abort()

    def _malformed(self, exc: HttpParserError | None, detail: str = "") -> None:
        """A request the parser refused: never forwarded, answered in Fender's words
        (without quoting its bytes, which may be part of a credential), counted, logged."""
        listener = self.listener
        text = detail or (str(exc.args[0]) if exc is not None and exc.args else "")
        status = 400
        if isinstance(exc, HttpParserError) and "PRI" in text:
            err: FenderError = Rejected(
                "unsupported_version", "HTTP/2 is not spoken here: send HTTP/1.1", status=505
            )
        else:
            context = exc.__context__ if exc is not None else None
            if isinstance(context, ValueError):
                text = str(context)
            err = Rejected("bad_request", text.splitlines()[0][:200] or "malformed", status=status)
        rid = listener.ids.new()
        in_flight = (self.serving is not None and self.serving is not self.reading) or any(
            exchange is not self.reading for exchange in self.queue
        )
        if not in_flight:  # nothing else owed an answer: this one is the 400
            reply = error_reply(err, rid)
            body = cast(bytes, reply.body)
            framing = b"content-length: %d\r\nconnection: close\r\n" % len(body)
            self.write(response_head(reply, framing, 0, False) + body)
        listener.metrics.count_request(NO_ROUTE, NO_ROUTE, "rejected", err.status, 0.0)
        if listener.access_log:
            listener.log.access(
                request_id=rid,
                listener=listener.name,
                route=NO_ROUTE,
                status=err.status,
                outcome="rejected",
                reason=err.reason,
                detail=err.detail,
            )
        self.reading = None
        if in_flight:  # what is in flight is answered first; then the connection closes
            self.closing = True
            self._pause(1)
            self.queue = deque(e for e in self.queue if e.headed and e.complete)
        else:
            self.close()

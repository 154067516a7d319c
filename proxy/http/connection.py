"""One keep-alive connection to an upstream endpoint, as a small state machine.

    connecting -> idle (in its pool) <-> busy (one exchange) -> closed

A connection goes back to idle only after a complete, clean exchange: the whole request
sent, the whole response read, and neither side asked to close. Anything else (an error,
a timeout, a body nobody read, `Connection: close`, a body framed by the connection's
end) closes it. The response head is parsed by llhttp; `send()` returns a `Pending`
resolved with the Reply once the head is in (the attempt timeout ends there), with the
body as bytes when it had already arrived whole, or as a stream relayed chunk by chunk.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, cast

from httptools import HttpParserError, HttpParserUpgrade, HttpResponseParser

from .alarm import Alarm
from .answer import answer_fields
from .codec import LAST_CHUNK
from .codec import chunk as encode_chunk
from .headers import Headers, WireHeaders
from .message import INF, Call, Rejected, Reply, UpstreamFailed
from .pending import Pending
from .stream import BodyStream

if TYPE_CHECKING:
    from .pool import Pool
    from .tunnel import Tunnel

CONNECTING, IDLE, BUSY, TUNNEL, CLOSED = "connecting", "idle", "busy", "tunnel", "closed"
NO_BODY_STATUS = frozenset({204, 304})
_NOTHING: frozenset[bytes] = frozenset()
_INTERIM_ROOM = 64 * 1024  # for 1xx answers before the real one


class StaleConnection(Exception):
    """A reused connection failed before any byte of the answer: the upstream had closed
    it meanwhile (the keep-alive race). Nothing reached the upstream's application."""


class _HeadOnly(Exception):
    """Stops the parser after the head of an answer to HEAD (llhttp would wait for the
    body its Content-Length announces)."""


class UpstreamConnection(asyncio.Protocol):
    __slots__ = (
        "_body",
        "_chunked",
        "_close",
        "_got_bytes",
        "_head",
        "_head_only",
        "_headers",
        "_held",
        "_idle",
        "_last",
        "_length",
        "_listed",
        "_message_done",
        "_pending",
        "_ready",
        "_reason",
        "_start",
        "_stream",
        "_stream_deadline",
        "_upgrade",
        "_upload",
        "_upload_chunked",
        "_upload_done",
        "alarm",
        "endpoint",
        "exchanges",
        "leftover",
        "limits",
        "loop",
        "parser",
        "pool",
        "state",
        "transport",
        "tunnel",
        "write_paused",
    )

    def __init__(
        self, pool: Pool, endpoint: str, loop: asyncio.AbstractEventLoop, limits: tuple[int, int]
    ) -> None:
        self.pool = pool
        self.endpoint = endpoint
        self.loop = loop
        self.limits = limits  # (max_header_size, max_headers) of the answers
        self.state = CONNECTING
        self.transport: asyncio.Transport | None = None
        self.parser = HttpResponseParser(self)
        self.alarm = Alarm(loop, self._timed_out)
        self.exchanges = 0  # completed ones: reused when > 0
        self.write_paused = False
        self.leftover = b""  # bytes after a 101, for the tunnel
        self.tunnel: Tunnel | None = None
        # One exchange's state: what send() sets, then what the answer says.
        self._pending: Pending | None = None
        self._head_only = self._upgrade = False
        self._idle: float | None = None
        self._stream_deadline = INF
        self._upload: BodyStream | None = None
        self._upload_chunked = False
        self._upload_done = True
        self._headers: Headers | None = None
        self._reason = b""
        self._last = 0.0  # loop time a body chunk last came
        self._reset()

    def _reset(self) -> None:
        """Ready for the next answer (what send() does not set anew)."""
        self._head: bytes | None = b""  # the answer's bytes until its head is parsed
        self._start = 0  # where in them the head begins (after interim answers)
        self._stream: BodyStream | None = None
        self._body: list[bytes] | None = None  # an answer's first chunks, before a stream
        self._listed: frozenset[bytes] = _NOTHING  # named by the answer's Connection
        self._length: int | None = None
        self._chunked = self._close = False
        self._got_bytes = False
        self._held = False  # the app is not reading: the body waits for it
        self._ready = False  # the head is in; the Reply is not handed over yet
        self._message_done = False

    # asyncio's side.
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's are not subclasses
        self.state = IDLE

    def pause_writing(self) -> None:
        self.write_paused = True
        if self._upload is not None:
            self._upload.pause()
        elif self.tunnel is not None:
            self.tunnel.upstream_full()

    def resume_writing(self) -> None:
        self.write_paused = False
        if self._upload is not None:
            self._upload.resume()
        elif self.tunnel is not None:
            self.tunnel.upstream_ready()

    def connection_lost(self, exc: Exception | None) -> None:
        self.state = CLOSED
        self.alarm.cancel()
        self.pool.lost(self)
        if self.tunnel is not None:
            self.tunnel.upstream_closed(exc)
            return
        pending, stream = self._pending, self._stream
        if pending is not None and not self._ready:
            self._pending = None
            if self.exchanges and not self._got_bytes:
                pending.fail(StaleConnection())
            else:
                pending.fail(UpstreamFailed("reset", self._why("closed the connection")))
        elif stream is not None and not stream.finished:
            if self._length is None and not self._chunked and exc is None:
                stream.finish()  # a body framed by the connection's end: this is its end
            else:
                stream.abort("reset")
        if self._upload is not None and not self._upload_done:
            self._upload.discard()

    def data_received(self, data: bytes) -> None:
        if self.tunnel is not None:
            self.tunnel.from_upstream(data)
            return
        self._got_bytes = True
        head = self._head
        if head is not None:  # the answer's head is still coming: keep its bytes
            head = self._head = head + data if head else data
            max_size, max_headers = self.limits
            if len(head) > max_size * (max_headers + 1) + _INTERIM_ROOM:
                self._broken("a head larger than the upstream's limits allow")
                return
        try:
            self.parser.feed_data(data)
        except HttpParserUpgrade as upgrade:
            if not self._upgrade:
                self._broken("an answer switched protocols unasked")
                return
            self.leftover = data[upgrade.args[0] :]
        except HttpParserError as exc:
            if isinstance(exc.__context__, _HeadOnly):
                self._message_done = True
                self._close = True  # the parser stopped: start afresh on a new connection
            elif self._message_done and (self._ready or self._stream is not None):
                self._close = True  # a whole answer, then stray bytes: keep it, not them
            else:
                self._broken("an answer that is not HTTP/1.1 within Fender's limits")
                return
        if self._ready:
            self._hand_over()
        elif self._stream is not None:
            if self._message_done:
                self._finished()
            else:
                self._last = self.loop.time()  # a chunk came: the idle timeout restarts

    # llhttp's callbacks. No on_header: the head is taken whole, once llhttp has
    # validated it, from the bytes it was parsed from (no Python call per field).
    def on_headers_complete(self) -> None:
        parser = self.parser
        status = parser.get_status_code()
        head = self._head
        if head is None or self.state != BUSY:
            raise ValueError("an answer nobody asked for")
        start = self._start
        end = head.index(b"\r\n\r\n", start)
        if status < 200 and status != 101:  # 100 Continue, 103 Early Hints: not the answer
            self._start = end + 4
            return
        self._head = None
        first = head.find(b"\r\n", start, end)
        if first < 0:  # a status line and no header at all
            self._reason, block = head[start + 13 : end], b""
        else:
            self._reason, block = head[start + 13 : first], head[first:end]  # "\r\nName: ..."
        block, self._length, self._chunked, close, self._listed = answer_fields(
            block, self._upgrade and status == 101, self.limits
        )
        self._close = close
        self._headers = WireHeaders(block)
        if not parser.should_keep_alive():
            self._close = True
        self._ready = True
        if self._head_only:
            raise _HeadOnly()
        if status in NO_BODY_STATUS or status == 101:
            return
        if self._length is None and not self._chunked:
            self._close = True  # framed by the connection's end
        self._body = []  # chunks kept here until it is clear whether the body streams

    def on_body(self, body: bytes) -> None:
        stream = self._stream
        if stream is not None:
            stream.feed(body)
        elif self._body is not None:
            self._body.append(body)

    def on_message_complete(self) -> None:
        if self._ready or self._stream is not None or self._head_only:
            self._message_done = True
        # else: an interim answer (1xx) ended; the real one follows

    # The attempt's side.
    def send(self, head: bytes, call: Call, chunked: bool, due: float) -> Pending:
        """Write one request; the Pending gets the Reply when its head is in."""
        transport = self.transport
        assert transport is not None and self.state == IDLE
        self.state = BUSY
        pending = self._pending = Pending(self.loop)
        self._head_only = call.method == "HEAD"
        self._upgrade = call.upgrade is not None
        self._idle = call.idle
        self._stream_deadline = call.stream_deadline
        if due != INF:
            self.alarm.set(due)
        else:
            self.alarm.clear()
        body = call.body
        if body is None:
            transport.write(head)
        elif isinstance(body, bytes):
            transport.write(head + body)
        else:
            transport.write(head)
            self._upload, self._upload_chunked, self._upload_done = body, chunked, False
            body.pipe(self)
            if self.write_paused:  # the upstream is still full from before: hold the app
                body.pause()
        return pending

    def _hand_over(self) -> None:
        """The head is in: give the pipeline its Reply (this connection settled first)."""
        self._ready = False
        pending = self._pending
        self._pending = None
        headers = self._headers
        assert headers is not None and pending is not None
        if self._listed:  # hop-by-hop by the upstream's own say (RFC 9110 section 7.6.1)
            headers = headers.without(self._listed)
        reply = Reply(self.parser.get_status_code(), headers)
        reply.reason = self._reason
        length = self._length
        if length is not None:
            reply.content_length = length
        chunks = self._body
        if self._upgrade and reply.status == 101:
            self.state = TUNNEL
            self.alarm.clear()
            reply.tunnel = self
        elif self._message_done:  # the whole answer is here: its body goes as one string
            if chunks:
                reply.body = chunks[0] if len(chunks) == 1 else b"".join(chunks)
            self._finished()
        elif chunks is not None:  # the body streams
            stream = self._stream = BodyStream(self, length)
            for chunk in chunks:
                stream.feed(chunk)
            self._body = None
            reply.body = stream
            reply.release = stream.discard
            self._last = now = self.loop.time()
            self.alarm.clear()
            due = self._stream_deadline if self._idle is None else now + self._idle
            if due != INF:
                self.alarm.set(min(due, self._stream_deadline))
        else:
            self._broken("")  # cannot happen: no body, yet not complete
        pending.resolve(reply)

    def _finished(self) -> None:
        """The answer is complete: back to the pool when reusable, else closed."""
        stream = self._stream
        if not self._close and self._upload_done and self.state == BUSY:
            if self._held:  # a pooled connection must be reading, to see its next answer
                self._held = False
                self.transport.resume_reading()  # type: ignore[union-attr]
            self.exchanges += 1
            self._reset()
            self.state = IDLE
            self.pool.put(self)  # its alarm now counts the idle time
        else:
            self.alarm.clear()
            self._stream = None
            self.close()
        if stream is not None:
            stream.finish()

    # The request body, as the Sink of the app's stream.
    def chunk(self, data: bytes) -> None:
        if self.transport is not None:
            self.transport.write(encode_chunk(data) if self._upload_chunked else data)

    def end(self) -> None:
        if self._upload_chunked and self.transport is not None:
            self.transport.write(LAST_CHUNK)
        self._upload_done = True
        self._upload = None

    def fail(self, reason: str) -> None:
        """The app's body broke off: the request cannot be completed."""
        self._upload = None
        pending = self._pending
        self._pending = None
        self.abort()
        if pending is not None:
            if reason == "body_timeout":
                detail = "the app sent no request body for longer than body_timeout"
                pending.fail(Rejected("body_timeout", detail, status=408))
            else:
                pending.fail(UpstreamFailed("reset", "the app's request body broke off"))

    # The response body's source.
    def pause_body(self) -> None:
        """The app cannot take more: its pause is not the upstream's silence (only
        `total` runs on)."""
        self._held = True
        if self.transport is not None:
            self.transport.pause_reading()

    def resume_body(self) -> None:
        self._held = False
        if self.transport is not None and self.state != CLOSED:
            self.transport.resume_reading()
            self._last = now = self.loop.time()
            if self._idle is not None and self._stream is not None:
                self.alarm.set(min(now + self._idle, self._stream_deadline))

    def abandon_body(self) -> None:
        self._stream = None
        self.close()

    # Endings.
    def _timed_out(self) -> None:
        pending, stream = self._pending, self._stream
        if pending is not None:  # no head within the attempt timeout
            self._pending = None
            self.abort()
            pending.fail(UpstreamFailed("timeout", self._why("sent no answer in time"), status=504))
        elif stream is not None:
            idle = None if self._held else self._idle  # held back by the app: not idle
            due = min(INF if idle is None else self._last + idle, self._stream_deadline)
            if due == INF:
                return  # nothing to time until it resumes
            if self.loop.time() < due:  # a chunk came since: not idle after all
                self.alarm.set(due)
                return
            self._stream = None
            self.abort()
            stream.abort("timeout")
        elif self.state == IDLE:
            self.close()  # idle too long in the pool

    def _broken(self, what: str) -> None:
        pending, stream = self._pending, self._stream
        self._pending = self._stream = None
        self.abort()
        if pending is not None:
            pending.fail(UpstreamFailed("bad_response", self._why(f"gave {what}")))
        elif stream is not None:
            stream.abort("reset")

    def _why(self, what: str) -> str:
        return f"upstream {self.pool.name} ({self.endpoint}) {what}"

    def close(self) -> None:
        if self.state != CLOSED and self.transport is not None:
            self.state = CLOSED
            self.transport.close()

    def abort(self) -> None:
        if self.transport is not None:
            self.state = CLOSED
            self.transport.abort()

    def idle_until(self, when: float) -> None:
        """In the pool: close when idle past `when` (loop time)."""
        self.alarm.set(when)

"""One request from the app, from its parsed head to the last byte of its answer.

Routed, made into a Call, run through its route's pipeline (driven without a Task, see
pending.py), answered: a whole body leaves with its head in one write; a streamed one is
relayed chunk by chunk as the upstream sends it. Once the head went to the app there is
no way to say "failed" cleanly, so a failure mid-body aborts the app's connection: it sees
truncation, never a fake clean end. Then it is counted and logged, once.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

from ..observe.request_metrics import NO_HEAD
from ..observe.series import NO_ROUTE
from .codec import CLOSE, LAST_CHUNK, chunk, error_reply, response_head
from .headers import Headers
from .hygiene import request_id
from .message import Call, FenderError, Rejected, Reply
from .pending import Driven
from .request import HOST_CHARS, check_framing, check_host, check_version
from .routing import normalize_path, split_target
from .stream import BodyStream

if TYPE_CHECKING:
    from .server import ServerConnection

CLIENT_CLOSED = 499  # not a real status: the app left before its answer (nginx's 499)
_NO_BODY = frozenset({204, 304})
_KEEP_ALIVE = b"connection: keep-alive\r\n"
_OPTIONS_STAR = (
    b"HTTP/1.1 200 OK\r\nallow: GET, HEAD, POST, PUT, PATCH, DELETE, OPTIONS\r\n"
    b"content-length: 0\r\nx-fender-outcome: ok\r\nx-fender-attempts: 0\r\n"
)


class Exchange(Driven):
    """A plain class: the fields most requests never change are class-level defaults."""

    # The head, as parsed (server.py) and read (request.read_watched).
    url = b""
    hosts: list[bytes] = []  # replaced, never changed in place
    lengths = 0
    length: int | None = None
    encodings: list[bytes] = []
    expect = False
    upgrade: bytes | None = None
    method = "GET"
    version = "1.1"
    keep_alive = True
    headed = False  # the head is parsed
    complete = False  # the whole request (its body included) has arrived
    body: BodyStream | None = None
    leftover = b""  # bytes after an Upgrade request's head: the tunnel's first
    # What is answered.
    close = False  # no next request on this connection
    chunked = False
    call: Call | None = None
    reply: Reply | None = None
    rid = ""
    route = upstream = NO_ROUTE
    status = CLIENT_CLOSED
    outcome, reason = "cancelled", "client_closed"
    started = 0.0
    headed_at = 0.0  # when the head of a streamed answer or a tunnel went out

    def __init__(self, conn: ServerConnection) -> None:
        self.conn = conn
        self.loop = conn.loop
        self.keys: list[bytes] = []
        self.lines: list[bytes] = []

    # From the head to the pipeline.
    def begin(self) -> None:
        conn = self.conn
        listener = conn.listener
        self.started = listener.clock.monotonic()
        keys = self.keys
        incoming = Headers.of(keys, self.lines)
        self.rid = (
            request_id(incoming, listener.ids) if b"x-request-id" in keys else (listener.ids.new())
        )
        try:
            call = self._route(incoming)
        except FenderError as err:
            self._answer(error_reply(err, self.rid))
            return
        except Exception as exc:  # a bug of ours: a 500, never an escape into the loop
            self._failed_internally(exc)
            return
        if call is None:  # OPTIONS *: Fender answers for itself
            self.status, self.outcome, self.reason = 200, "ok", ""
            self.close = self._closes() or not self.complete
            conn.write(_OPTIONS_STAR + (CLOSE if self.close else b"") + b"\r\n")
            self._finish()
            return
        self.call = call
        if self.expect and self.body is not None and not self.complete and self.version != "1.0":
            conn.write(b"HTTP/1.1 100 Continue\r\n\r\n")
        handler = listener.routing.targets[call.route].handler
        self.drive(handler(call))  # type: ignore[arg-type]  # a policy's coroutine

    def _route(self, incoming: Headers) -> Call | None:
        """The Call for this request, or None for `OPTIONS *`; raises when it is refused
        (request.py's rules) or no route takes it."""
        hosts = self.hosts
        if self.version != "1.1":
            check_version(self.version)
        host = hosts[0] if len(hosts) == 1 else b""
        if not host or host.translate(None, HOST_CHARS):  # sane_host(), inlined
            host = check_host(hosts, self.version)
        if self.encodings:
            check_framing(self.lengths, self.encodings)
        url = self.url
        if url[:1] == b"/":  # origin-form, the common case
            raw, sep, query = url.decode("latin-1").partition("?")
            path = raw if "." not in raw and "%2" not in raw else normalize_path(raw)
            query = sep + query
        elif url == b"*":
            if self.method == "OPTIONS":
                return None
            raise Rejected("bad_request", "only OPTIONS may ask about '*'", status=400)
        else:
            target = split_target(url.decode("latin-1"))
            path, query = (normalize_path(target[0]), target[1]) if target else (None, "")
        if path is None:
            raise Rejected("bad_request", "the request target is not a usable path", status=400)
        conn = self.conn
        routing = conn.listener.routing
        route = routing.router.match(self.method, host.decode("latin-1"), path, incoming)
        if route is None:
            raise Rejected("no_route", f"no route for {self.method} {path}", status=404)
        name = self.route = route.name
        dest = routing.targets[name]
        self.upstream = dest.upstream
        upgrade = self.upgrade
        if upgrade is not None and upgrade.lower() == b"h2c" and b"h2c" not in route.upgrade:
            upgrade = None  # an offer the client falls back from (RFC 9110 section 7.8)
        if upgrade is not None and upgrade.lower() not in route.upgrade:
            raise Rejected(
                "upgrade_unsupported",
                f"route {name} does not allow Upgrade: {upgrade.decode('latin-1')[:40]}",
                status=501,
            )
        client_ip = conn.client_ip
        stream = self.body
        body: bytes | BodyStream | None = stream
        if stream is not None and self.complete:
            body = stream.joined()  # it came whole with the head: replayable, one write
        return Call(
            self.method,
            route.rewrite(path) + query,
            dest.headers.build(incoming, self.rid, client_ip),
            body,
            name,
            self.rid,
            self.started,
            incoming=incoming,
            client_ip=client_ip,
            upgrade=upgrade,
        )

    def done(self, reply: Reply | None, error: BaseException | None) -> None:
        """The pipeline's end: its Reply, or what it raised."""
        if error is not None:
            if isinstance(error, asyncio.CancelledError) and self.conn.gone:
                self._finish()  # the app left: counted as cancelled, client_closed
                return
            if isinstance(error, FenderError):
                reply = error_reply(error, self.rid)
            else:  # a bug of ours (or a stray cancellation): 500, and this connection ends
                self._failed_internally(error)
                return
        assert reply is not None
        if self.conn.gone:
            reply.release()
            self._finish()
            return
        self._answer(reply)

    def _failed_internally(self, error: BaseException) -> None:
        name = type(error).__name__  # not its text: it may quote a URL or a header
        self.conn.listener.log.event("internal_error", "error", request_id=self.rid, error=name)
        reply = error_reply(FenderError("internal_error", status=500), self.rid)
        reply.close_connection = True
        self._answer(reply)

    # The answer.
    def _closes(self) -> bool:
        conn = self.conn
        return self.close or not self.keep_alive or conn.closing or conn.listener.draining

    def _answer(self, reply: Reply) -> None:
        self.reply = reply
        status = self.status = reply.status
        self.outcome, self.reason = reply.outcome, reply.fender_reason
        if reply.close_connection or not self.complete:
            self.close = True  # a malformed request, or a body left unread: start afresh
        body = reply.body
        stream = None
        if reply.tunnel is not None:  # a 101: no body, no framing, and the connection stays
            conn = self.conn
            call = self.call
            assert call is not None
            self.headed_at = conn.listener.clock.monotonic()
            conn.write(response_head(reply, b"", call.attempts, call.retry_owned))
            conn.tunnel_to(reply.tunnel, self)
            return
        if type(body) is bytes and self.method != "HEAD" and status not in _NO_BODY:
            framing = b"content-length: %d\r\n" % len(body)  # the common case
        elif self.method == "HEAD" or status in _NO_BODY or status < 200:
            length = reply.content_length if self.method == "HEAD" else None
            framing = b"content-length: %d\r\n" % length if length is not None else b""
            if isinstance(body, BodyStream):
                body.discard()
            body = b""
        elif reply.content_length is not None:
            framing, stream = b"content-length: %d\r\n" % reply.content_length, body
        elif self.version != "1.0":
            framing, stream, self.chunked = b"transfer-encoding: chunked\r\n", body, True
        else:
            framing, stream, self.close = b"", body, True  # framed by the connection's end
        if self.close or not self.keep_alive or self.conn.closing or self.conn.listener.draining:
            self.close = True
            framing += CLOSE
        elif self.version == "1.0":
            framing += _KEEP_ALIVE
        call = self.call
        if call is None:
            head = response_head(reply, framing, 0, False)
        else:
            head = response_head(reply, framing, call.attempts, call.retry_owned)
        conn = self.conn
        if stream is None:
            conn.write(head + body if body else head)  # type: ignore[operator]
            self._finish()
            return
        self.headed_at = conn.listener.clock.monotonic()
        conn.write(head)
        conn.streaming = stream  # type: ignore[assignment]
        stream.pipe(self)  # type: ignore[union-attr]
        if conn.write_paused and conn.streaming is stream:  # the app is still full
            stream.pause()

    # The answer's body, as the Sink of the upstream's stream.
    def chunk(self, data: bytes) -> None:
        self.conn.write(chunk(data) if self.chunked else data)

    def end(self) -> None:
        if self.chunked:
            self.conn.write(LAST_CHUNK)
        self.conn.streaming = None
        self._finish()

    def fail(self, reason: str) -> None:
        """The upstream failed or stalled after the head went out: cut the app's
        connection, so that it sees a truncated answer, never one that looks complete."""
        conn = self.conn
        conn.streaming = None
        conn.abort()
        if reason == "client_closed":
            self.outcome, self.reason = "cancelled", "client_closed"
        else:
            self.outcome, self.reason = "failed", reason
        self._finish()

    def gone(self) -> None:
        """The app closed its connection."""
        if self.running:
            self.cancel()  # the pipeline stops, and so does its upstream attempt
        body = self.body
        if body is not None and not body.finished:
            body.abort("client_closed")
        stream = self.conn.streaming
        if stream is not None:
            self.conn.streaming = None
            stream.discard()
            self.outcome, self.reason = "cancelled", "client_closed"
            self._finish()

    def finish_tunnel(self) -> None:
        self._finish()

    def _finish(self) -> None:
        """Counted and logged once; the connection moves on."""
        conn = self.conn
        listener = conn.listener
        seconds = listener.clock.monotonic() - self.started if self.started else 0.0
        if self.reply is None:
            head = NO_HEAD  # nothing was answered: the app left first
        elif self.headed_at:
            head = self.headed_at - self.started
        else:
            head = seconds  # a whole answer's head went out with its body
        listener.metrics.count_request(
            self.route, self.upstream, self.outcome, self.status, seconds, head
        )
        if listener.access_log:
            call = self.call
            listener.log.request(
                self.rid,
                listener.name,
                self.route,
                self.upstream,
                self.method,
                self.status,
                seconds,
                self.outcome,
                self.reason,
                call.attempts if call is not None else 0,
            )
        reply = self.reply
        if reply is not None:
            self.reply = None
            reply.release()
        conn.finished(self)

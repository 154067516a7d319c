"""One request from the app, from its parsed head to the last byte of its answer.

Routed, made into a Call, run through its route's pipeline (driven without a Task, see
pending.py), answered: a whole body leaves with its head in one write; a streamed one is
relayed chunk by chunk as the upstream sends it. Once the head went to the app there is
no way to say "failed" cleanly, so a failure mid-body aborts the app's connection: it sees
truncation, never a fake clean end. Then it is counted and logged, once.
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import TYPE_CHECKING, Any, cast

from ..observe.metrics import NO_ROUTE
from ..observe.request_metrics import NO_HEAD
from .codec import CLOSE, LAST_CHUNK, chunk, error_reply, response_head
from .headers import Headers
from .hygiene import request_id
from .message import Call, FenderError, Rejected, Reply
from .pending import Driver, run
from .request import check_framing, check_host, check_version
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


class Exchange:
    """A plain class: the fields most requests never change are class-level defaults."""

    # The head, as parsed (server.py) and read (request.read_watched).
    url = b""
    hosts: list[bytes] = []
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
    # The answer.
    close = False  # no next request on this connection
    chunked = False
    call: Call | None = None
    driver: Driver | None = None
    reply: Reply | None = None
    rid = ""
    route = upstream = NO_ROUTE
    status = CLIENT_CLOSED
    outcome, reason = "cancelled", "client_closed"
    started = 0.0
    headed_at = 0.0  # when the head of a streamed answer or a tunnel went out

    def __init__(self, conn: ServerConnection) -> None:
        self.conn = conn
        self.keys: list[bytes] = []
        self.lines: list[bytes] = []

    # From the head to the pipeline.
    def begin(self) -> None:
        conn = self.conn
        listener = conn.listener
        self.started = listener.clock.monotonic()
        incoming = Headers.of(self.keys, self.lines)
        self.rid = request_id(incoming, listener.ids)
        try:
            call = self._route(incoming)
        except FenderError as err:
            self._answer(error_reply(err, self.rid))
            return
        if call is None:  # OPTIONS *: Fender answers for itself
            self.status, self.outcome, self.reason = 200, "ok", ""
            self.close = self._closes()
            conn.write(_OPTIONS_STAR + (CLOSE if self.close else b"") + b"\r\n")
            self._finish()
            return
        self.call = call
        if self.expect and self.body is not None and not self.complete:
            conn.write(b"HTTP/1.1 100 Continue\r\n\r\n")
        target = conn.listener.routing.targets[call.route]
        coro = cast("Coroutine[Any, Any, Reply]", target.handler(call))
        self.driver = run(coro, self._answered, conn.loop)

    def _route(self, incoming: Headers) -> Call | None:
        check_version(self.version)
        host = check_host(self.hosts, self.version)
        check_framing(self.lengths, self.encodings)
        if self.url == b"*":
            if self.method == "OPTIONS":
                return None
            raise Rejected("bad_request", "only OPTIONS may ask about '*'", status=400)
        target = split_target(self.url.decode("latin-1"))
        path = normalize_path(target[0]) if target else None
        if target is None or path is None:
            raise Rejected("bad_request", "the request target is not a usable path", status=400)
        routing = self.conn.listener.routing
        route = routing.router.match(self.method, host.decode("latin-1"), path, incoming)
        if route is None:
            raise Rejected("no_route", f"no route for {self.method} {path}", status=404)
        self.route, dest = route.name, routing.targets[route.name]
        self.upstream = dest.upstream
        upgrade = self.upgrade
        if upgrade is not None and upgrade.lower() not in route.upgrade:
            raise Rejected(
                "upgrade_unsupported",
                f"route {route.name} does not allow Upgrade: {upgrade.decode('latin-1')[:40]}",
                status=501,
            )
        client_ip = self.conn.client_ip
        body: bytes | BodyStream | None = self.body
        if self.body is not None and self.complete:
            body = self.body.joined()  # it came whole with the head: replayable, one write
        return Call(
            method=self.method,
            target=route.rewrite(path) + target[1],
            headers=dest.headers.build(incoming, self.rid, client_ip),
            body=body,
            route=route.name,
            request_id=self.rid,
            started=self.started,
            incoming=incoming,
            client_ip=client_ip,
            upgrade=upgrade,
        )

    def _answered(self, reply: Reply | None, error: BaseException | None) -> None:
        """The pipeline's end: its Reply, or what it raised."""
        self.driver = None
        if error is not None:
            if isinstance(error, asyncio.CancelledError):
                self._finish()  # the app left: counted as cancelled, client_closed
                return
            if isinstance(error, FenderError):
                reply = error_reply(error, self.rid)
            else:  # a bug of ours: answer 500, never take the connection down
                name = type(error).__name__  # not its text: it may quote a URL or a header
                self.conn.listener.log.event(
                    "internal_error", "error", request_id=self.rid, error=name
                )
                reply = error_reply(FenderError("internal_error", status=500), self.rid)
        assert reply is not None
        if self.conn.gone:
            reply.release()
            self._finish()
            return
        self._answer(reply)

    # The answer.
    def _closes(self) -> bool:
        conn = self.conn
        return self.close or not self.keep_alive or conn.closing or conn.listener.draining

    def _answer(self, reply: Reply) -> None:
        self.reply = reply
        self.status, self.outcome, self.reason = reply.status, reply.outcome, reply.fender_reason
        call = self.call
        if reply.close_connection or not self.complete:
            self.close = True  # a malformed request, or a body left unread: start afresh
        body = reply.body
        stream = None
        status = reply.status
        if self.method == "HEAD" or status in _NO_BODY or status < 200:
            length = reply.content_length if self.method == "HEAD" else None
            framing = b"content-length: %d\r\n" % length if length is not None else b""
            if isinstance(body, BodyStream):
                body.discard()
            body = b""
        elif isinstance(body, bytes):
            framing = b"content-length: %d\r\n" % len(body)
        elif reply.content_length is not None:
            framing, stream = b"content-length: %d\r\n" % reply.content_length, body
        elif self.version != "1.0":
            framing, stream, self.chunked = b"transfer-encoding: chunked\r\n", body, True
        else:
            framing, stream, self.close = b"", body, True  # framed by the connection's end
        if self._closes():
            self.close = True
            framing += CLOSE
        elif self.version == "1.0":
            framing += _KEEP_ALIVE
        attempts = call.attempts if call is not None else 0
        owned = call.retry_owned if call is not None else False
        head = response_head(reply, framing, attempts, owned)
        conn = self.conn
        if reply.tunnel is not None:
            self.headed_at = conn.listener.clock.monotonic()
            conn.write(head)
            conn.tunnel_to(reply.tunnel, self)
            return
        if stream is None:
            assert isinstance(body, bytes)
            conn.write(head + body if body else head)
            self._finish()
            return
        self.headed_at = conn.listener.clock.monotonic()
        conn.write(head)
        conn.streaming = stream
        stream.pipe(self)

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
        driver = self.driver
        if driver is not None:
            driver.cancel()  # the pipeline stops, and so does its upstream attempt
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
        listener = self.conn.listener
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
        self.conn.finished(self)

"""The data plane: an app's request -> route -> Call -> pipeline -> reply streamed back.

Built on aiohttp's low-level server (no router, no middlewares: the routes are ours).
A response streams chunk by chunk as the upstream sends it, with backpressure both ways.
Once the status line went to the app there is no way to say "failed" cleanly, so a
failure mid-body aborts the app's connection: it sees truncation, never a fake clean end.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import aiohttp
import orjson
from aiohttp import web
from multidict import CIMultiDict
from yarl import URL

from .clock import Clock
from .headers import RequestHeaders, id_source, request_id
from .logs import JsonLog
from .metrics import NO_ROUTE, Metrics
from .pipeline import INF, Call, FenderError, Handler, Rejected, Reply
from .routing import Router, normalize_path

# Not a real status: the app closed its connection before the answer (nginx's 499).
CLIENT_CLOSED = 499
Cut = tuple[str, str]  # (outcome, reason) of an answer cut mid-body


@dataclass(frozen=True, slots=True)
class RouteTarget:
    """What a matched route leads to: its upstream's header rules and its pipeline."""

    upstream: str
    headers: RequestHeaders
    handler: Handler


@dataclass(frozen=True, slots=True)
class Routing:
    """A listener's routes and where they lead. A reload swaps it whole: a request reads
    it once, at its start, and keeps what it read."""

    router: Router
    targets: Mapping[str, RouteTarget]


class DataPlane:
    """The request handler of one listener."""

    def __init__(
        self,
        listener: str,
        routing: Routing,
        *,
        metrics: Metrics,
        log: JsonLog,
        clock: Clock,
        access_log: bool,
        draining: Callable[[], bool],
    ) -> None:
        self.listener = listener
        self.routing = routing
        self.metrics = metrics
        self.log = log
        self.clock = clock
        self.access_log = access_log
        self.draining = draining
        self._ids = id_source()

    async def handle(self, request: web.BaseRequest) -> web.StreamResponse:
        start = self.clock.monotonic()
        rid = request_id(request.headers, self._ids)
        route, upstream = NO_ROUTE, NO_ROUTE
        status, outcome, reason, call = CLIENT_CLOSED, "cancelled", "", None
        try:
            try:
                call, dest = self._call(request, rid, start)
                route, upstream = call.route, dest.upstream
                if call.body is not None and _expects_continue(request):
                    await request.writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
                reply = await dest.handler(call)
            except FenderError as err:
                reply = error_reply(err, rid)
            except Exception as exc:  # a bug of ours: answer 500, never crash the listener
                error = type(exc).__name__  # not its text: it may quote a URL or a header
                self.log.event("internal_error", "error", request_id=rid, error=error)
                reply = error_reply(FenderError("internal_error", status=500), rid)
            status, outcome, reason = reply.status, reply.outcome, reply.fender_reason
            response, cut = await self._relay(request, reply, call)
            if cut is not None:
                outcome, reason = cut
            return response
        finally:
            seconds = self.clock.monotonic() - start
            self.metrics.count_request(route, upstream, outcome, status, seconds)
            if self.access_log:
                self.log.access(
                    request_id=rid,
                    listener=self.listener,
                    route=route,
                    upstream=upstream,
                    method=request.method,
                    status=status,
                    duration_ms=round(seconds * 1000, 3),
                    outcome=outcome,
                    reason=reason,
                    attempts=call.attempts if call else 0,
                )

    async def _stream(
        self, request: web.BaseRequest, response: web.StreamResponse, body: Any, call: Call
    ) -> Cut | None:
        """Copy the body chunk by chunk; returns (outcome, reason) if it had to be cut.

        Each chunk must come within `idle`, and the last one before `stream_deadline`.
        """
        clock, idle, deadline = self.clock, call.idle, call.stream_deadline
        bounded = idle is not None or deadline != INF
        iterator = aiter(body)
        try:
            while True:
                if bounded:
                    left = deadline - clock.monotonic()
                    async with clock.timeout(left if idle is None else min(idle, left)):
                        chunk = await anext(iterator, None)
                else:
                    chunk = await anext(iterator, None)
                if chunk is None:
                    return None
                await response.write(chunk)
        except ConnectionResetError:
            return "cancelled", "client_closed"  # the app went away
        except (TimeoutError, aiohttp.ClientError, OSError) as exc:
            # The upstream failed or stalled after the status line went out: cut the app's
            # connection so that it sees a truncated answer, never one that looks complete.
            if request.transport is not None:
                request.transport.abort()
            return "failed", "timeout" if isinstance(exc, TimeoutError) else "reset"

    def malformed(self, status: int, detail: str) -> None:
        """A request the HTTP parser refused: never forwarded, still counted and logged."""
        self.metrics.count_request(NO_ROUTE, NO_ROUTE, "rejected", status, 0.0)
        if self.access_log:
            self.log.access(
                listener=self.listener,
                route=NO_ROUTE,
                status=status,
                outcome="rejected",
                reason="bad_request",
                detail=detail,
            )

    def _call(self, request: web.BaseRequest, rid: str, start: float) -> tuple[Call, RouteTarget]:
        """Route the request and make its Call; raises Rejected when it cannot go anywhere."""
        target = _split_target(request.raw_path)
        path = normalize_path(target[0]) if target else None
        if target is None or path is None:
            raise Rejected("bad_request", "the request target is not a usable path", status=400)
        routing = self.routing
        route = routing.router.match(request.method, request.host, path, request.headers)
        if route is None:
            raise Rejected("no_route", f"no route for {request.method} {path}", status=404)
        dest = routing.targets[route.name]
        peer = request.transport.get_extra_info("peername") if request.transport else None
        client_ip = peer[0] if peer else None
        call = Call(
            method=request.method,
            target=route.rewrite(path) + target[1],
            headers=dest.headers.build(request.headers, rid, client_ip),
            body=request.content.iter_any() if request.body_exists else None,
            route=route.name,
            request_id=rid,
            started=start,
            incoming=request.headers,
            client_ip=client_ip,
        )
        return call, dest

    async def _relay(
        self, request: web.BaseRequest, reply: Reply, call: Call | None
    ) -> tuple[web.StreamResponse, Cut | None]:
        """Send the reply; returns the response and, if the body was cut, why."""
        headers = mark(reply, call.attempts if call else 0)
        body = reply.body
        response: web.StreamResponse
        if isinstance(body, bytes) and request.method != "HEAD":
            # Status line, headers and body leave in one write.
            response = web.Response(
                status=reply.status, reason=reply.reason or None, headers=headers, body=body
            )
        else:
            response = web.StreamResponse(
                status=reply.status, reason=reply.reason or None, headers=headers
            )
            if reply.content_length is not None:
                response.content_length = reply.content_length
            elif isinstance(body, bytes):
                response.content_length = len(body)
        if reply.close_connection or self.draining():
            response.force_close()  # tell keep-alive apps to reconnect elsewhere
        try:
            await response.prepare(request)
            if not isinstance(body, bytes):
                assert call is not None  # a streamed body comes from an upstream
                cut = await self._stream(request, response, body, call)
                if cut:
                    return response, cut
            await response.write_eof()
        except ConnectionResetError:
            return response, ("cancelled", "client_closed")  # the app went away
        finally:
            reply.release()
        return response, None


def _expects_continue(request: web.BaseRequest) -> bool:
    return request.version >= (1, 1) and request.headers.get("expect", "").lower() == "100-continue"


def _split_target(raw: str) -> tuple[str, str] | None:
    """Request target -> (path, '?query' or ''); absolute-form keeps only path and query."""
    if not raw.startswith("/"):
        if "://" not in raw:
            return None  # '*' or authority-form: nothing to forward
        url = URL(raw)
        raw = url.raw_path + (f"?{url.raw_query_string}" if url.raw_query_string else "")
    path, sep, query = raw.partition("?")
    return path, sep + query


def mark(reply: Reply, attempts: int) -> CIMultiDict[str]:
    """Reply headers plus what Fender says about them: outcome, attempts, reason.

    `x-fender-*` are Fender's words only: assignment replaces whatever an upstream sent
    under those names, and the optional ones are removed when Fender has nothing to say.
    """
    headers = reply.headers
    headers["x-fender-outcome"] = reply.outcome
    headers["x-fender-attempts"] = str(attempts)
    if reply.fender_reason:
        headers["x-fender-reason"] = reply.fender_reason
    else:
        headers.popall("x-fender-reason", None)
    if reply.outcome != "fallback":
        headers.popall("x-fender-fallback", None)
    return headers


def error_reply(err: FenderError, rid: str) -> Reply:
    """Fender's own answer for a request it could not forward: small JSON, says why."""
    headers = CIMultiDict({"content-type": "application/json", "server": "fender"})
    if isinstance(err, Rejected):
        headers.update(err.headers)
        if err.retry_after is not None:  # whole seconds, 1 s to a day
            headers["retry-after"] = str(max(1, math.ceil(min(err.retry_after, 86_400.0))))
    body = orjson.dumps({"error": err.reason, "detail": err.detail, "request_id": rid})
    return Reply(
        status=err.status,
        headers=headers,
        body=body,
        outcome=err.outcome,
        fender_reason=err.reason,
        close_connection=err.status == 400,
    )

"""Listeners: aiohttp's low-level HTTP server with Fender's limits on every connection.

Limits on the request line, header count and size come from aiohttp's C parser; this
module adds a header read timeout (aiohttp has none) and answers what the parser refuses
in Fender's own words: JSON, counted, logged, never forwarded.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web
from aiohttp.web_protocol import RequestHandler

from .config import Limits
from .pipeline import FenderError
from .server import error_reply, mark

MalformedReporter = Callable[[int, str], None]  # (status, detail)


class _HardenedProtocol(RequestHandler):
    """aiohttp's connection handler plus a header read timeout, and Fender's own answer
    (JSON, counted, logged) for requests the parser refused.

    aiohttp bounds an idle connection by its keep-alive timeout but has no separate limit
    for a request whose headers trickle in (slowloris): once a request's first bytes
    arrived, the whole head must follow within `header_timeout`.
    """

    def __init__(
        self,
        manager: web.Server,
        *,
        header_timeout: float,
        on_malformed: MalformedReporter,
        **kwargs: Any,
    ) -> None:
        super().__init__(manager, **kwargs)
        self._header_timeout = header_timeout
        self._header_timer: asyncio.TimerHandle | None = None
        self._on_malformed = on_malformed

    def handle_error(
        self,
        request: web.BaseRequest,
        status: int = 500,
        exc: BaseException | None = None,
        message: str | None = None,
    ) -> web.StreamResponse:
        if request.writer.output_size > 0:
            raise ConnectionError("the response had started: the connection is dropped")
        # Only the first line: the parser's message goes on to quote the offending bytes,
        # which may be part of a credential.
        text = message or (getattr(exc, "message", None) if exc else None) or "malformed request"
        detail = str(text).strip().splitlines()[0][:200]
        self._on_malformed(status, detail)
        reason = "bad_request" if status < 500 else "internal_error"
        reply = error_reply(FenderError(reason, detail, status=status), "")
        response = web.Response(status=status, body=reply.body, headers=mark(reply, 0))
        response.force_close()
        return response

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        waiting_for_head = not self._request_in_progress and not self._messages
        if waiting_for_head and self._header_timer is None and not self._force_close:
            self._header_timer = self._loop.call_later(self._header_timeout, self._head_late)
        elif not waiting_for_head and self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None

    def _head_late(self) -> None:
        self._header_timer = None
        if not self._request_in_progress and not self._messages:
            self.force_close()

    def connection_lost(self, exc: BaseException | None) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None
        super().connection_lost(exc)


class HardenedServer(web.Server):
    """aiohttp's low-level server with the listener's limits applied to every connection."""

    def __init__(
        self,
        handler: Callable[[web.BaseRequest], Awaitable[web.StreamResponse]],
        limits: Limits,
        on_malformed: MalformedReporter,
    ) -> None:
        super().__init__(
            handler,
            handler_cancellation=True,  # the app gave up: stop the upstream call too
            max_line_size=limits.max_request_line,
            max_field_size=limits.max_header_size,
            max_headers=limits.max_headers,
            keepalive_timeout=limits.idle_timeout,
            access_log=None,
            auto_decompress=False,
        )
        self._header_timeout = limits.header_timeout
        self._on_malformed = on_malformed

    def __call__(self) -> RequestHandler:
        return _HardenedProtocol(
            self,
            header_timeout=self._header_timeout,
            on_malformed=self._on_malformed,
            loop=self._loop,
            **self._kwargs,
        )

"""The control port's HTTP server: aiohttp's, with the listeners' connection hardening.

aiohttp's defaults suit an application server, not a port that a kubelet, Prometheus
and whoever can reach the pod talk to: keep-alive for an hour and no limit on how long a
request's head may take (slowloris). Here, from `control.limits` (the same keys and
defaults as a listener's): the head of a request must arrive within `header_timeout` of
its first byte, an idle keep-alive connection is closed after `idle_timeout`, and the
request line, a header line and the header count are bounded by aiohttp's C parser.
Self-contained: the control port does not share the data plane's code.
"""

from __future__ import annotations

import asyncio
from typing import Any

from aiohttp import web
from aiohttp.web_protocol import RequestHandler

from ..config.model import Limits


class _Protocol(RequestHandler):
    """aiohttp's connection handler plus a header read timeout: once a request's first
    bytes arrived, the whole head must follow within `header_timeout`."""

    def __init__(self, manager: web.Server, *, header_timeout: float, **kwargs: Any) -> None:
        super().__init__(manager, **kwargs)
        self._header_timeout = header_timeout
        self._header_timer: asyncio.TimerHandle | None = None

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


class ControlServer:
    """Serves one aiohttp Application on one address with `limits` on every connection."""

    def __init__(self, app: web.Application, limits: Limits) -> None:
        self.limits = limits
        self._runner = web.AppRunner(
            app,
            access_log=None,
            handle_signals=False,
            keepalive_timeout=limits.idle_timeout,
            max_line_size=limits.max_request_line,
            max_field_size=limits.max_header_size,
            max_headers=limits.max_headers,
        )
        self._sockets: asyncio.Server | None = None

    async def start(self, host: str, port: int) -> int:
        """Listen; returns the bound port. Raises OSError when the address is taken."""
        await self._runner.setup()
        server = self._runner.server
        assert server is not None
        loop = asyncio.get_running_loop()
        header_timeout = self.limits.header_timeout

        def connection() -> RequestHandler:
            # What web.Server() makes, with the header timeout added.
            return _Protocol(server, header_timeout=header_timeout, loop=loop, **server._kwargs)

        self._sockets = await loop.create_server(connection, host, port, reuse_address=True)
        bound: int = self._sockets.sockets[0].getsockname()[1]
        return bound

    async def close(self) -> None:
        if self._sockets is not None:
            self._sockets.close()
            self._sockets = None
        await self._runner.cleanup()

"""Active health checks: each endpoint asked `health_check.path` every interval.

Checks are not on the request path, so they use aiohttp's client (its own small session,
the upstream's `headers.set` and TLS settings), never the data plane's pool.
"""

from __future__ import annotations

import asyncio
import ssl

import aiohttp
from yarl import URL

from ..config.model import Upstream as UpstreamConfig
from ..state.health import Health
from .headers import Headers
from .hygiene import RequestHeaders

_SKIP_AUTO_HEADERS = ("User-Agent", "Accept", "Accept-Encoding", "Content-Type")


class Prober:
    def __init__(self, config: UpstreamConfig, headers: RequestHeaders, health: Health) -> None:
        self.config = config
        self.headers = dict(headers.build(Headers(), "health-check", None).items())
        self.health = health
        self._session: aiohttp.ClientSession | None = None
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        tls = self.config.tls
        context: ssl.SSLContext | bool = tls.verify
        if tls.verify and tls.ca_file is not None:
            context = ssl.create_default_context(cafile=str(tls.ca_file))
        connector = aiohttp.TCPConnector(limit=len(self.config.endpoints) * 2, ssl=context)
        self._session = aiohttp.ClientSession(
            connector=connector,
            cookie_jar=aiohttp.DummyCookieJar(),
            skip_auto_headers=_SKIP_AUTO_HEADERS,
            auto_decompress=False,
            trust_env=False,
        )
        self._task = asyncio.ensure_future(self.health.run_checks(self._probe))

    async def _probe(self, base: str) -> int | None:
        """One check of one endpoint: its status, or None."""
        check = self.config.health_check
        assert check is not None and self._session is not None
        try:
            async with self._session.get(
                URL(base + check.path, encoded=True),
                headers=self.headers,
                allow_redirects=False,
                timeout=aiohttp.ClientTimeout(total=check.timeout),
            ) as response:
                return response.status
        except (aiohttp.ClientError, TimeoutError):
            return None

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            self._task = None
        if self._session is not None:
            await self._session.close()
            self._session = None

"""One upstream: its endpoints, its connection pool, and `send()`, the I/O seam.

The client is set up to be transparent: no redirects followed, no cookies kept, no
decompression, no User-Agent, Accept or Accept-Encoding of its own, no proxy from the
environment. TLS is verified unless the upstream says `tls.verify: false`.
"""

from __future__ import annotations

import itertools
import ssl
from collections.abc import Callable
from dataclasses import dataclass

import aiohttp
from yarl import URL

from .config import Upstream as UpstreamConfig
from .headers import RequestHeaders, response_headers
from .pipeline import Call, Reply, UpstreamFailed

# Until the timeouts policy lands, a connect that hangs (a black-holed address) must not
# hang the request forever.
CONNECT_TIMEOUT = 10.0
_SKIP_AUTO_HEADERS = ("User-Agent", "Accept", "Accept-Encoding", "Content-Type")

AttemptRecorder = Callable[[str, str], None]  # (endpoint, result)


@dataclass(frozen=True, slots=True)
class Endpoint:
    base: str  # scheme://authority[/path], no trailing slash
    label: str  # the configured endpoint, as a metric label

    def url(self, target: str) -> URL:
        return URL(self.base + target, encoded=True)


class Upstream:
    """Pool, endpoint choice and send() for one configured upstream."""

    def __init__(self, name: str, config: UpstreamConfig, record: AttemptRecorder) -> None:
        self.name = name
        self.config = config
        self.endpoints = tuple(Endpoint(e, e) for e in config.endpoints)
        self.request_headers = RequestHeaders(config.headers, forwarded=config.forwarded_headers)
        self._next = itertools.cycle(self.endpoints)
        self._record = record
        self._session: aiohttp.ClientSession | None = None

    async def start(self) -> None:
        connector = aiohttp.TCPConnector(
            limit=self.config.pool.max_connections,
            limit_per_host=0,
            keepalive_timeout=self.config.pool.idle_timeout,
            ssl=self._ssl_context(),
            ttl_dns_cache=10,
        )
        self._session = aiohttp.ClientSession(
            connector=connector,
            cookie_jar=aiohttp.DummyCookieJar(),
            skip_auto_headers=_SKIP_AUTO_HEADERS,
            auto_decompress=False,
            trust_env=False,
            timeout=aiohttp.ClientTimeout(total=None, sock_connect=CONNECT_TIMEOUT),
        )

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    def _ssl_context(self) -> ssl.SSLContext | bool:
        tls = self.config.tls
        if not tls.verify:
            return False
        if tls.ca_file is not None:
            return ssl.create_default_context(cafile=str(tls.ca_file))
        return True

    def pick(self) -> Endpoint:
        return next(self._next)

    async def send(self, call: Call) -> Reply:
        """One attempt against the next endpoint; returns once response headers arrived."""
        assert self._session is not None, "upstream used before start()"
        endpoint = self.pick()
        call.attempts += 1
        try:
            response = await self._session.request(
                call.method,
                endpoint.url(call.target),
                headers=call.headers,
                data=call.body,
                allow_redirects=False,
                compress=None,
            )
        except aiohttp.ClientConnectorCertificateError as exc:
            raise self._failed(endpoint, "tls_error", exc) from None
        except aiohttp.ClientConnectorError as exc:
            raise self._failed(endpoint, "connect_error", exc) from None
        except (TimeoutError, aiohttp.ServerTimeoutError) as exc:
            raise self._failed(endpoint, "timeout", exc, status=504) from None
        except (
            aiohttp.ClientOSError,
            aiohttp.ServerDisconnectedError,
            aiohttp.ClientPayloadError,
        ) as exc:
            raise self._failed(endpoint, "reset", exc) from None
        except aiohttp.ClientResponseError as exc:
            raise self._failed(endpoint, "bad_response", exc) from None
        self._record(endpoint.label, "response")
        return Reply(
            status=response.status,
            reason=response.reason or "",
            headers=response_headers(response.headers),
            body=response.content.iter_any(),
            content_length=response.content_length,
            release=response.release,
        )

    def _failed(
        self, endpoint: Endpoint, reason: str, exc: BaseException, status: int = 502
    ) -> UpstreamFailed:
        self._record(endpoint.label, reason)
        # Only the OS's words: an exception's text may hold the full URL, query included.
        os_error = getattr(exc, "os_error", None) or exc
        why = getattr(os_error, "strerror", None) or type(exc).__name__
        return UpstreamFailed(
            reason, f"upstream {self.name} ({endpoint.label}): {why}", status=status
        )

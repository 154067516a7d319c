"""One upstream: its endpoints, its connection pool, and `send()`, the I/O seam.

The client is set up to be transparent: no redirects followed, no cookies kept, no
decompression, no User-Agent, Accept or Accept-Encoding of its own, no proxy from the
environment. TLS is verified unless the upstream says `tls.verify: false`.
"""

from __future__ import annotations

import asyncio
import itertools
import ssl
from collections.abc import Callable
from dataclasses import dataclass

import aiohttp
from multidict import CIMultiDict, CIMultiDictProxy
from yarl import URL

from .classify import is_failure
from .clock import Clock
from .config import Upstream as UpstreamConfig
from .faults import Faults, FaultSpec
from .headers import RequestHeaders, response_headers
from .health import Health
from .logs import JsonLog
from .pipeline import INF, Call, Rejected, Reply, UpstreamFailed

_NO_HEADERS: CIMultiDictProxy[str] = CIMultiDictProxy(CIMultiDict())
# Response bodies of a known length up to this are read whole within the attempt.
SMALL_BODY = 64 * 1024
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

    def __init__(
        self,
        name: str,
        config: UpstreamConfig,
        record: AttemptRecorder,
        clock: Clock,
        log: JsonLog | None = None,
        faults: Faults | None = None,
    ) -> None:
        self.name = name
        self.clock = clock
        self._connect_timeouts: dict[float | None, aiohttp.ClientTimeout] = {}
        self.config = config
        self.endpoints = tuple(Endpoint(e, e) for e in config.endpoints)
        self.request_headers = RequestHeaders(config.headers, forwarded=config.forwarded_headers)
        self._next = itertools.cycle(self.endpoints)
        self._record = record
        self._session: aiohttp.ClientSession | None = None
        self.faults = faults
        self.health: Health | None = None
        if config.health_check is not None or config.outlier is not None:
            self.health = Health(
                name,
                [e.label for e in self.endpoints],
                config.health_check,
                config.outlier,
                clock,
                log or JsonLog(),
            )
        self._checks: asyncio.Task[None] | None = None

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
            timeout=aiohttp.ClientTimeout(total=None),
            # An answer beyond these is a `bad_response` (aiohttp's ClientResponseError).
            max_field_size=self.config.limits.max_header_size,
            max_headers=self.config.limits.max_headers,
        )
        if self.health is not None and self.config.health_check is not None:
            self._checks = asyncio.ensure_future(self.health.run_checks(self._probe))
        # aiohttp silently sends an idempotent request a second time when its connection
        # drops before the answer. The upstream then sees attempts Fender never counted,
        # and the retry policy (budget, backoff, idempotency rules) is bypassed. Fender
        # makes every attempt itself: a dropped connection is a `reset` for Retry to judge.
        self._session._retry_connection = False

    async def _probe(self, base: str) -> int | None:
        """One active health check of one endpoint: its status, or None."""
        check = self.config.health_check
        assert check is not None and self._session is not None
        headers = self.request_headers.build(_NO_HEADERS, "health-check", None)
        try:
            async with self._session.get(
                URL(base + check.path, encoded=True),
                headers=headers,
                allow_redirects=False,
                timeout=aiohttp.ClientTimeout(total=check.timeout),
            ) as response:
                return response.status
        except (aiohttp.ClientError, TimeoutError):
            return None

    async def close(self) -> None:
        if self._checks is not None:
            self._checks.cancel()
            self._checks = None
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

    def pick(self, avoid: str | None = None) -> Endpoint:
        """The next endpoint, round robin: a usable one (healthy, not ejected) and not
        `avoid` (the last one tried) when there is such a one; when every endpoint is
        out, the next one anyway."""
        health = self.health
        if health is None:
            endpoint = next(self._next)
            if endpoint.label == avoid and len(self.endpoints) > 1:
                endpoint = next(self._next)
            return endpoint
        first = None
        for _ in range(len(self.endpoints)):
            endpoint = next(self._next)
            if health.usable(endpoint.label):
                if endpoint.label != avoid:
                    return endpoint
                first = first or endpoint
        return first or next(self._next)

    def endpoint_status(self) -> list[dict[str, object]]:
        health, now = self.health, self.clock.monotonic()
        out: list[dict[str, object]] = []
        for endpoint in self.endpoints:
            if health is None:
                out.append({"endpoint": endpoint.label, "usable": True})
                continue
            state = health.states[endpoint.label]
            ejected = max(0.0, state.ejected_until - now)
            out.append(
                {
                    "endpoint": endpoint.label,
                    "usable": health.usable(endpoint.label),
                    "healthy": state.checked_ok,
                    "ejected_for_s": round(ejected, 3),
                }
            )
        return out

    def _client_timeout(self, connect: float | None) -> aiohttp.ClientTimeout:
        timeout = self._connect_timeouts.get(connect)
        if timeout is None:
            timeout = aiohttp.ClientTimeout(total=None, sock_connect=connect)
            self._connect_timeouts[connect] = timeout
        return timeout

    async def send(self, call: Call) -> Reply:
        """One attempt against the next endpoint; returns once response headers arrived.

        The attempt is cut at `min(per_try, deadline)`: that is the attempt timeout.
        """
        assert self._session is not None, "upstream used before start()"
        limit = call.per_try
        if call.deadline != INF:
            left = call.deadline - self.clock.monotonic()
            if left <= 0:  # spent before this attempt (queues, uploads): not the upstream's fault
                raise Rejected("timeout", "the deadline passed before the attempt", status=504)
            limit = left if limit is None else min(limit, left)
        endpoint = self.pick(call.last_endpoint)
        call.last_endpoint = endpoint.label
        call.attempts += 1
        call.sent_at = self.clock.monotonic()
        body: bytes | None = None
        fault = (
            self.faults.pick(call.route, self.name) if self.faults and self.faults.active else None
        )
        try:
            async with self.clock.timeout(limit):
                if fault is not None:
                    injected = await self._inject(fault, endpoint)
                    if injected is not None:
                        return injected
                response = await self._session.request(
                    call.method,
                    endpoint.url(call.target),
                    headers=call.headers,
                    data=call.body,
                    allow_redirects=False,
                    compress=None,
                    timeout=self._client_timeout(call.connect),
                )
                length = response.content_length
                if length is not None and length <= SMALL_BODY and call.method != "HEAD":
                    # A small body is read within the attempt: one write to the app later,
                    # and a connection cut mid-body is still a `reset` that can be retried.
                    try:
                        body = await response.read()
                    finally:
                        response.release()
        except aiohttp.ClientConnectorCertificateError as exc:
            raise self._failed(endpoint, "tls_error", exc) from None
        except (aiohttp.ClientConnectorError, aiohttp.ConnectionTimeoutError) as exc:
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
        except aiohttp.ClientError as exc:  # any other connection trouble before the answer
            raise self._failed(endpoint, "reset", exc) from None
        self._record(endpoint.label, "response")
        failed = is_failure(response.status)
        if self.health is not None:
            self.health.record(endpoint.label, failure=failed)
        reply = Reply(
            status=response.status,
            reason=response.reason or "",
            headers=response_headers(response.headers),
            content_length=response.content_length,
            outcome="failed" if failed else "ok",
            fender_reason="upstream_status" if failed else "",
        )
        if body is not None:
            reply.body = body
        else:
            reply.body = response.content.iter_any()
            reply.release = response.release
        return reply

    async def _inject(self, fault: FaultSpec, endpoint: Endpoint) -> Reply | None:
        """Play a fault where a real one happens; an abort answers instead of the upstream."""
        if fault.delay:
            await self.clock.sleep(fault.delay)
        if fault.reset:
            raise aiohttp.ServerDisconnectedError("injected fault")
        if fault.abort is None:
            return None
        self._record(endpoint.label, "fault")
        failed = is_failure(fault.abort)
        return Reply(
            status=fault.abort,
            headers=CIMultiDict({"content-type": "application/json", "x-fender-fault": "abort"}),
            body=b'{"error": "injected fault"}',
            outcome="failed" if failed else "ok",
            fender_reason="upstream_status" if failed else "",
        )

    def _failed(
        self, endpoint: Endpoint, reason: str, exc: BaseException, status: int = 502
    ) -> UpstreamFailed:
        self._record(endpoint.label, reason)
        if self.health is not None:
            self.health.record(endpoint.label, failure=True)
        # Only the OS's words about a connect: other exceptions' text may hold the full URL,
        # query included.
        os_error = getattr(exc, "os_error", None)
        why = getattr(os_error, "strerror", None) or type(exc).__name__
        return UpstreamFailed(
            reason, f"upstream {self.name} ({endpoint.label}): {why}", status=status
        )

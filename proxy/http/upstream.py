"""One upstream: its endpoints, its connection pool, and `send()`, the I/O seam.

`send()` is the terminal handler of every pipeline: one attempt against the next
endpoint, returning once the response head arrived. It is transparent: no redirects
followed, no cookies kept, no decompression, no headers of its own but Host, framing and
x-request-id. TLS is verified unless the upstream says `tls.verify: false`, with SNI.
"""

from __future__ import annotations

import asyncio
import itertools
import ssl
from collections.abc import Callable
from dataclasses import dataclass
from urllib.parse import urlsplit

from ..config.faults import FaultSpec
from ..config.model import Upstream as UpstreamConfig
from ..config.types import endpoint_labels
from ..observe.logs import JsonLog
from ..state.classify import IDEMPOTENT_METHODS, is_failure
from ..state.clock import Clock
from ..state.faults import Faults
from ..state.health import Health
from .codec import request_head
from .connection import StaleConnection, UpstreamConnection
from .headers import Headers
from .hygiene import RequestHeaders
from .message import INF, Call, Rejected, Reply, UpstreamFailed
from .pool import Pool, Target
from .probe import Prober

AttemptRecorder = Callable[[str, str], None]  # (endpoint, result)


@dataclass(frozen=True, slots=True)
class Endpoint:
    label: str  # the configured endpoint, as a metric label
    host: bytes  # the Host header
    prefix: bytes  # the endpoint's path, put before every target
    base: str  # scheme://authority[/path], for health checks


def _endpoint(url: str, label: str, tls: ssl.SSLContext | None) -> tuple[Endpoint, Target]:
    parts = urlsplit(url)
    https = parts.scheme == "https"
    host = parts.hostname or ""
    port = parts.port or (443 if https else 80)
    default = port == (443 if https else 80)
    authority = (f"[{host}]" if ":" in host else host) + ("" if default else f":{port}")
    endpoint = Endpoint(label, authority.encode("idna"), parts.path.encode("latin-1"), url)
    return endpoint, Target(host, port, tls if https else None, host if https else None)


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
        self.config = config
        https = any(e.startswith("https:") for e in config.endpoints)
        tls = _tls_context(config) if https else None
        labels = endpoint_labels(config.endpoints)
        named = zip(config.endpoints, labels, strict=True)
        pairs = [_endpoint(url, label, tls) for url, label in named]
        self.endpoints = tuple(e for e, _ in pairs)
        self._targets = {e.label: t for e, t in pairs}
        self.request_headers = RequestHeaders(config.headers, forwarded=config.forwarded_headers)
        self._next = itertools.cycle(self.endpoints)
        self._record = record
        self.pool: Pool | None = None
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
        self._prober: Prober | None = None

    async def start(self) -> None:
        pool = self.config.pool
        self.pool = Pool(
            self.name,
            self._targets,
            max_connections=pool.max_connections,
            idle_timeout=pool.idle_timeout,
            limits=(self.config.limits.max_header_size, self.config.limits.max_headers),
            loop=asyncio.get_running_loop(),
        )
        if self.health is not None and self.config.health_check is not None:
            self._prober = Prober(self.config, self.request_headers, self.health)
            self._prober.start()

    async def close(self, *, busy_too: bool = False) -> None:
        """Stop health checks and close idle connections; busy ones when their exchange
        ends (a reload retired this upstream), or at once (`busy_too`: Fender stops)."""
        if self._prober is not None:
            await self._prober.close()
            self._prober = None
        if self.pool is not None:
            await self.pool.close(busy_too=busy_too)

    @property
    def in_use(self) -> int:
        """Connections still open (a retired upstream is gone when this reaches 0)."""
        return self.pool.open if self.pool is not None else 0

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

    async def send(self, call: Call) -> Reply:
        """One attempt against the next endpoint; returns once the response head arrived.

        The attempt is cut at `min(per_try, deadline)`: that is the attempt timeout.
        """
        pool = self.pool
        assert pool is not None, "upstream used before start()"
        now = self.clock.monotonic()
        limit = call.per_try
        if call.deadline != INF:
            left = call.deadline - now
            if left <= 0:  # spent before this attempt (queues, uploads): not the upstream's fault
                raise Rejected("timeout", "the deadline passed before the attempt", status=504)
            limit = left if limit is None else min(limit, left)
        due = INF if limit is None else now + limit
        endpoint = self.pick(call.last_endpoint)
        label = call.last_endpoint = endpoint.label
        call.attempts += 1
        call.sent_at = now
        try:
            if self.faults is not None and self.faults.active:
                fault = self.faults.pick(call.route, self.name)
                if fault is not None:
                    injected = await self._inject(fault, label, due)
                    if injected is not None:
                        return injected
            conn = pool.take(label) or await self._connect(pool, label, call, due)
            extra = b""
            if call.upgrade is not None:
                extra = b"connection: upgrade\r\nupgrade: " + call.upgrade + b"\r\n"
            head, chunked = request_head(call, endpoint.host, endpoint.prefix, extra)
            try:
                reply: Reply = await conn.send(head, call, chunked, due)
            except asyncio.CancelledError:
                conn.abort()  # the app left: the answer would only be read to be thrown away
                raise
            except StaleConnection:
                if not _may_replay(call):
                    raise UpstreamFailed(
                        "reset", f"upstream {self.name} ({label}) closed a reused connection"
                    ) from None
                # The keep-alive race: counted as an attempt, never as the upstream's failure.
                self._record(label, "stale_connection")
                call.attempts += 1
                conn = await self._connect(pool, label, call, due)
                try:
                    reply = await conn.send(head, call, chunked, due)
                except asyncio.CancelledError:
                    conn.abort()
                    raise
        except UpstreamFailed as failure:
            self._record(label, failure.reason)
            if self.health is not None:
                self.health.record(label, failure=True)
            raise
        self._record(label, "response")
        failed = reply.status >= 500  # state/classify.py's is_failure, inlined
        if self.health is not None:
            self.health.record(label, failure=failed)
        if failed:
            reply.outcome, reply.fender_reason = "failed", "upstream_status"
        return reply

    async def _connect(self, pool: Pool, label: str, call: Call, due: float) -> UpstreamConnection:
        timeout = call.connect
        if due != INF:
            left = due - self.clock.monotonic()
            timeout = left if timeout is None else min(timeout, left)
        return await pool.connection(label, timeout)

    async def _inject(self, fault: FaultSpec, label: str, due: float) -> Reply | None:
        """Play a fault where a real one happens; an abort answers instead of the upstream."""
        if fault.delay:
            left = due - self.clock.monotonic()
            await self.clock.sleep(min(fault.delay, left))
            if fault.delay >= left:
                raise UpstreamFailed("timeout", f"upstream {self.name}: injected delay", status=504)
        if fault.reset:
            raise UpstreamFailed("reset", f"upstream {self.name}: injected reset")
        if fault.abort is None:
            return None
        self._record(label, "fault")
        failed = is_failure(fault.abort)
        headers = Headers({"content-type": "application/json"})
        headers.add_line(b"x-fender-fault", b"x-fender-fault: abort")
        return Reply(
            status=fault.abort,
            headers=headers,
            body=b'{"error": "injected fault"}',
            outcome="failed" if failed else "ok",
            fender_reason="upstream_status" if failed else "",
        )


def _may_replay(call: Call) -> bool:
    """Sending again after a stale connection: the body must be whole, and the request
    one that may be repeated or one with no body at all."""
    body = call.body
    return body is None or (isinstance(body, bytes) and call.method in IDEMPOTENT_METHODS)


def _tls_context(config: UpstreamConfig) -> ssl.SSLContext:
    tls = config.tls
    if not tls.verify:
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    elif tls.ca_file is not None:
        context = ssl.create_default_context(cafile=str(tls.ca_file))
    else:
        context = ssl.create_default_context()
    context.set_alpn_protocols(["http/1.1"])
    return context

"""The `upstreams:` sections: endpoints, headers, TLS, pool, and the per-upstream guards
(circuit breaker, bulkhead, rate limit) that every attempt to the upstream passes.
"""

from __future__ import annotations

import ssl
from pathlib import Path
from typing import Literal

from pydantic import Field, ValidationInfo, field_validator, model_validator

from .types import Condition, Endpoint, HeaderName, HeaderValue, PathText, Section, unit
from .units import Duration, Rate, Ratio, Size


class FailureRate(Section):
    threshold: Ratio = unit("50%")
    min_calls: int = Field(default=20, ge=1)
    """Fewer calls than this in the window never trip the breaker."""
    window: Duration = unit("30s")


class SlowCalls(Section):
    duration: Duration
    """A call whose response headers take this long or longer is slow."""
    threshold: Ratio = unit("80%")
    min_calls: int = Field(default=20, ge=1)
    window: Duration = unit("30s")


class HalfOpen(Section):
    probes: int = Field(default=1, ge=1)
    """Trial calls let through at once while half open; other calls are answered as open."""
    successes: int = Field(default=1, ge=1)
    """Successful trial calls that close the circuit; one failed trial reopens it."""
    max_wait: Duration = unit("10s")
    """A trial call whose response headers have not come by then counts as failed, and
    its permit is freed (a hung probe must not hold the circuit)."""


class CircuitBreaker(Section):
    """Trips on whichever of consecutive_failures, failure_rate and slow_calls is set."""

    consecutive_failures: int | None = Field(default=5, ge=1)
    failure_rate: FailureRate | None = None
    slow_calls: SlowCalls | None = None
    open_for: Duration = unit("30s")
    """How long it stays open after a trip; doubled on each trip in a row."""
    max_open_for: Duration = unit("5m")
    half_open: HalfOpen = HalfOpen()
    failure_on: tuple[Condition, ...] = (
        "connect_error",
        "tls_error",
        "reset",
        "timeout",
        "bad_response",
        "5xx",
    )
    """What counts as a failure. Fender's own rejections never do."""

    @model_validator(mode="after")
    def _something_trips(self) -> CircuitBreaker:
        if self.consecutive_failures is None and not (self.failure_rate or self.slow_calls):
            raise ValueError("set consecutive_failures, failure_rate or slow_calls")
        if self.max_open_for < self.open_for:
            raise ValueError("max_open_for is shorter than open_for")
        return self


class Bulkhead(Section):
    max_concurrent: int = Field(ge=1)
    """Attempts in flight at once (a streamed answer counts until its end)."""
    max_queued: int = Field(default=0, ge=0)
    """Attempts waiting for a slot, first come first served; beyond: 503 bulkhead_full."""
    queue_timeout: Duration = unit("1s")
    """Longest wait in the queue (and never past the request's deadline)."""


class UpstreamRateLimit(Section):
    """A quota that every attempt to the upstream spends, retries included."""

    rate: Rate | None = None
    """Tokens per second; none: only the cool-down below."""
    burst: int | None = Field(default=None, ge=1)
    """Bucket size (default: one second of `rate`, at least 1)."""
    on_limit: Literal["queue", "reject"] = "queue"
    max_wait: Duration = unit("1s")
    """In `queue` mode, the longest wait for a token (never past the deadline)."""
    cooldown: bool = True
    """After a 429 or 503 that asks for a wait (Retry-After, retry-after-ms, the rate-limit
    reset headers), hold every attempt for that long: they wait if their deadline allows,
    or are answered at once with the time left."""
    max_cooldown: Duration = unit("60s")
    """A longer ask pauses the upstream this long only (a bad header must not block it)."""
    scope: Literal["local", "global"] = "local"
    """`global`: the quota's bucket is in Redis (`redis:`), shared by the fleet (rate and
    burst are fleet totals); while Redis is unreachable, a local one of rate / live
    replicas. With `redis:`, the cool-down is fleet-wide whatever the scope."""


class HeaderRules(Section):
    """Header changes on the way to the upstream."""

    set: dict[HeaderName, HeaderValue] = Field(default_factory=dict)
    """Replaces whatever the app sent under that name (credentials belong here)."""
    remove: tuple[HeaderName, ...] = ()


class Tls(Section):
    verify: bool = True
    """Verify the upstream's certificate and name; `false` logs a warning at every start."""
    ca_file: Path | None = None
    """PEM bundle of a private CA, used instead of the system CAs. Read when the file is
    checked or loaded; a relative path is relative to the policy file."""

    @field_validator("ca_file")
    @classmethod
    def _readable_pem(cls, path: Path | None, info: ValidationInfo) -> Path | None:
        if path is None:
            return None
        base = (info.context or {}).get("base_dir")
        path = path if base is None else Path(base) / path
        try:
            ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT).load_verify_locations(cafile=str(path))
        except ssl.SSLError:
            raise ValueError(f"ca_file {path} holds no PEM certificate") from None
        except OSError as exc:
            raise ValueError(f"cannot read ca_file {path}: {exc.strerror}") from None
        return path


class Pool(Section):
    max_connections: int = Field(default=100, ge=1)
    idle_timeout: Duration = unit("4s")
    """Shorter than the shortest common upstream keep-alive (Node.js: 5s), so that Fender
    closes an idle connection before the upstream does and never sends on a dead one."""


class UpstreamLimits(Section):
    """What an upstream's answer may be; beyond it, the attempt fails as `bad_response`."""

    max_header_size: Size = unit("8KiB")
    """Of one response header line."""
    max_headers: int = Field(default=100, ge=1, le=1000)
    """Response headers in one answer."""


class HealthCheck(Section):
    """Active checks: each endpoint is asked `path` every `interval`."""

    path: PathText
    interval: Duration = unit("10s")
    timeout: Duration = unit("2s")
    healthy: int = Field(default=2, ge=1)
    """Passed checks in a row that make an unhealthy endpoint healthy again."""
    unhealthy: int = Field(default=3, ge=1)
    """Failed checks in a row that make an endpoint unhealthy."""
    expect_status: tuple[Condition, ...] = ("2xx",)
    """Statuses (or classes) that pass."""


class Outlier(Section):
    """Passive ejection: an endpoint failing real requests is left out for a while."""

    consecutive_failures: int = Field(default=5, ge=1)
    ejection: Duration = unit("30s")
    """How long it is left out; doubled on each ejection in a row, up to max_ejection."""
    max_ejection: Duration = unit("5m")
    max_ejected: Ratio = unit("50%")
    """Never more than this share of the upstream's endpoints out at once (at least one
    endpoint always stays in)."""


class Upstream(Section):
    endpoints: tuple[Endpoint, ...] = Field(min_length=1)
    """`http://` or `https://` base URLs, used round robin."""
    headers: HeaderRules = HeaderRules()
    tls: Tls = Tls()
    pool: Pool = Pool()
    limits: UpstreamLimits = UpstreamLimits()
    forwarded_headers: bool = False
    """Add X-Forwarded-For and X-Forwarded-Proto."""
    circuit_breaker: CircuitBreaker | None = None
    bulkhead: Bulkhead | None = None
    rate_limit: UpstreamRateLimit | None = None
    priority: Literal["critical", "high", "normal", "low"] = "normal"
    """How much its being down weighs in the degradation level."""
    health_check: HealthCheck | None = None
    outlier: Outlier | None = None
    """Endpoint selection skips unhealthy and ejected endpoints; when every endpoint is
    out, it tries them all anyway (never a self-inflicted outage)."""

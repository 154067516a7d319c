"""The `policies:` sections of the policy file: timeouts, retry, rate limit, fallback.

A route names one policy; a route without one gets `Policy()`: the default timeouts and
no retry.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import Field, PrivateAttr, ValidationInfo, model_validator

from .types import Condition, HeaderName, HeaderValue, Method, Name, Section, unit
from .units import Duration, Rate, Ratio, Size


class Timeouts(Section):
    """Time limits of a request. A long healthy stream is only ever cut by `idle` or
    `total`: the others end when the response headers arrive."""

    connect: Duration = unit("5s")
    """Connecting to an endpoint (TCP and TLS), per attempt. Counts as `connect_error`."""
    per_try: Duration | None = None
    """One attempt, from its start until its response headers. Counts as `timeout`."""
    first_byte: Duration | None = unit("5m")
    """From the request's arrival until response headers go to the app: every attempt and
    every backoff included."""
    idle: Duration | None = unit("5m")
    """Between two chunks of a response body (streams)."""
    total: Duration | None = None
    """The whole request, the response body included. Past it before the headers: 504;
    after: the app's connection is aborted."""


class Backoff(Section):
    type: Literal["exponential", "linear", "constant", "fibonacci"] = "exponential"
    base: Duration = unit("250ms")
    """The first wait (before jitter)."""
    max: Duration = unit("10s")
    """No wait is longer (before jitter)."""
    jitter: Literal["full", "equal", "none"] = "full"
    """`full`: a random wait up to the delay; `equal`: half the delay plus a random half."""


class RetryAfter(Section):
    honor: bool = True
    """On 429 and 503, wait what the upstream asks instead of the backoff: `retry-after-ms`,
    `Retry-After` (seconds or HTTP date), `RateLimit-Reset`, `X-RateLimit-Reset`, or the
    longer of `x-ratelimit-reset-requests` and `x-ratelimit-reset-tokens`."""
    max: Duration = unit("60s")
    """A longer ask is not waited for: the answer goes to the app at once."""


class Budget(Section):
    """Retries over `window` may be at most `ratio` of the requests plus
    `min_per_second` x window: retries can never multiply an outage."""

    ratio: Ratio = unit("20%")
    min_per_second: float = Field(default=5.0, ge=0)
    window: Duration = unit("10s")


PRESETS: dict[str, dict[str, Any]] = {
    "aggressive": {"attempts": 5, "backoff": {"base": "500ms"}},
    "standard": {"attempts": 3, "backoff": {"base": "1s"}},
    "conservative": {"attempts": 2, "backoff": {"base": "2s"}},
    "persistent": {"attempts": 7, "backoff": {"base": "1s"}},
}


class Retry(Section):
    preset: Literal["aggressive", "standard", "conservative", "persistent"] | None = None
    """Start from a preset; every other key here overrides it field by field."""
    attempts: int = Field(default=3, ge=1, le=10)
    """Attempts in all, the first one included."""
    on: tuple[Condition, ...] = (
        "connect_error",
        "reset",
        "timeout",
        "429",
        "502",
        "503",
        "504",
    )
    """What is retried. GET, HEAD, OPTIONS, PUT and DELETE are retried on all of these;
    POST and PATCH only on `connect_error`, or when they carry `idempotency_header`."""
    backoff: Backoff = Backoff()
    retry_after: RetryAfter = RetryAfter()
    idempotency_header: HeaderName | None = "idempotency-key"
    """A POST or PATCH carrying this header is retried like an idempotent request (the
    header keeps its value on every attempt)."""
    budget: Budget = Budget()
    buffer_limit: Size = unit("1MiB")
    """Request bodies up to this size are kept so that an attempt can replay them; a larger
    body streams through once and is not retried."""

    @model_validator(mode="before")
    @classmethod
    def _apply_preset(cls, data: Any) -> Any:
        if not isinstance(data, dict) or data.get("preset") not in PRESETS:
            return data
        preset = PRESETS[data["preset"]]
        merged = {**preset, **data}
        if isinstance(data.get("backoff", {}), dict):
            merged["backoff"] = {**preset["backoff"], **data.get("backoff", {})}
        return merged


class RouteRateLimit(Section):
    """A token bucket per route (or per key) that every incoming request spends once."""

    rate: Rate
    burst: int | None = Field(default=None, ge=1)
    """Bucket size (default: one second of `rate`, at least 1)."""
    key: str | None = None
    """`header:NAME` or `client_ip`: one bucket per value. None: one bucket for the route."""
    max_keys: int = Field(default=10_000, ge=1)
    """Buckets kept; the least recently used is dropped first."""
    on_limit: Literal["reject", "queue"] = "reject"
    """`reject`: 429 with Retry-After at once; `queue`: wait for a token up to max_wait."""
    max_wait: Duration = unit("1s")
    scope: Literal["local", "global"] = "local"
    """`local`: this replica's bucket. `global`: one bucket in Redis (`redis:`) for the
    whole fleet, `rate` and `burst` being fleet totals; while Redis is unreachable, a
    local bucket of rate / live replicas."""

    @model_validator(mode="after")
    def _known_key(self) -> RouteRateLimit:
        if self.key is not None and self.key != "client_ip":
            kind, _, name = self.key.partition(":")
            if kind != "header" or not name.strip():
                raise ValueError("key is `header:NAME` or `client_ip`")
        return self

    @property
    def header(self) -> str | None:
        """The request header `key` reads (lower case), if it reads one."""
        if self.key is None or not self.key.startswith("header:"):
            return None
        return self.key.partition(":")[2].strip().lower()


Trigger = Literal[
    "circuit_open", "rate_limited", "bulkhead_full", "timeout", "connect_error", "exhausted"
]


class Stale(Section):
    max_age: Duration = unit("10m")
    """An answer older than this is not served."""
    max_entries: int = Field(default=1000, ge=1)
    max_bytes: Size = unit("16MiB")
    """All kept bodies together; an answer larger than a tenth of it is not kept."""
    methods: tuple[Method, ...] = ("GET", "HEAD")


class Static(Section):
    status: int = Field(default=503, ge=200, le=599)
    headers: dict[HeaderName, HeaderValue] = Field(default_factory=dict)
    body: str | None = None
    body_file: Path | None = None
    """Read once at load; a relative path is relative to the policy file."""
    _content: bytes = PrivateAttr(default=b"")

    @model_validator(mode="after")
    def _read_body(self, info: ValidationInfo) -> Static:
        if self.body is not None and self.body_file is not None:
            raise ValueError("give body or body_file, not both")
        if self.body_file is None:
            self._content = (self.body or "").encode()
            return self
        base = (info.context or {}).get("base_dir")
        path = self.body_file if base is None else Path(base) / self.body_file
        try:
            content = path.read_bytes()
        except OSError as exc:
            raise ValueError(f"cannot read body_file {path}: {exc.strerror}") from None
        if len(content) > MAX_STATIC_BODY:
            raise ValueError(f"body_file {path} is larger than 1MiB")
        self._content = content
        return self

    @property
    def content(self) -> bytes:
        return self._content


MAX_STATIC_BODY = 1 << 20


class FallbackStep(Section):
    """One of: `upstream: NAME`, `stale: {...}`, `static: {...}`."""

    upstream: Name | None = None
    """Send the request to this upstream instead (its own breaker, bulkhead and quota)."""
    stale: Stale | None = None
    """The last good 2xx answer to the same method, path and query, for the same
    credentials, Accept-Encoding and Vary headers."""
    static: Static | None = None

    @model_validator(mode="after")
    def _exactly_one(self) -> FallbackStep:
        given = [k for k in ("upstream", "stale", "static") if getattr(self, k) is not None]
        if len(given) != 1:
            raise ValueError("a step is exactly one of upstream, stale or static")
        return self

    @property
    def kind(self) -> str:
        return "upstream" if self.upstream else "stale" if self.stale else "static"


class Fallback(Section):
    on: tuple[Trigger, ...] = (
        "circuit_open",
        "rate_limited",
        "bulkhead_full",
        "timeout",
        "exhausted",
    )
    """What sends a request to the chain. `exhausted`: any upstream failure (5xx, 429,
    reset, ...) once retries are used up."""
    chain: tuple[FallbackStep, ...] = Field(min_length=1)
    """Tried in order until one answers."""


class Policy(Section):
    timeouts: Timeouts = Timeouts()
    retry: Retry | None = None
    """No retry section: one attempt only."""
    rate_limit: RouteRateLimit | None = None
    fallback: Fallback | None = None

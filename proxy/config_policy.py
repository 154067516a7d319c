"""The `policies:` sections of the policy file: timeouts and retry.

A route names one policy; a route without one gets `Policy()`: the default timeouts and
no retry.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

from pydantic import BeforeValidator, Field, WithJsonSchema, model_validator

from .config_types import HeaderName, Section, unit
from .units import Duration, Ratio, Size

# `on:` words besides status codes and classes. `connect_error`: nothing was sent;
# `reset`: the connection closed before response headers; `timeout`: `per_try` ran out.
RETRY_REASONS = ("connect_error", "reset", "timeout")
_STATUS_RE = re.compile(r"^(?:[1-5]\d\d|[1-5]xx)$")


def _condition(value: Any) -> str:
    text = str(value).strip().lower() if isinstance(value, int | str) else ""
    if text in RETRY_REASONS or _STATUS_RE.match(text):
        return text
    raise ValueError(
        f"not a retry condition: use {', '.join(RETRY_REASONS)}, a status like 503 "
        "or a class like 5xx"
    )


RetryCondition = Annotated[
    str,
    BeforeValidator(_condition),
    WithJsonSchema(
        {
            "anyOf": [
                {"type": "integer", "minimum": 100, "maximum": 599},
                {"type": "string", "pattern": r"^(connect_error|reset|timeout|[1-5]\d\d|[1-5]xx)$"},
            ]
        }
    ),
]


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
    """On 429 and 503, wait what `Retry-After` (seconds or HTTP date), `RateLimit-Reset` or
    `X-RateLimit-Reset` asks instead of the backoff."""
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
    on: tuple[RetryCondition, ...] = (
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


class Policy(Section):
    timeouts: Timeouts = Timeouts()
    retry: Retry | None = None
    """No retry section: one attempt only."""

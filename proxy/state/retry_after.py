"""How long an upstream asks us to wait: every header that says it, in one place.

Read in this order, the first one readable wins:
- `retry-after-ms`: milliseconds. The OpenAI and Anthropic APIs send it, and their SDKs
  read it before `Retry-After`, because it is more precise.
- `Retry-After`: delta-seconds or an HTTP date (RFC 9110 section 10.2.3).
- `RateLimit-Reset` (IETF httpapi draft): delta-seconds.
- `X-RateLimit-Reset`: delta-seconds for some APIs and a Unix time for others (GitHub):
  a value past 10^9 is read as a Unix time.
- `x-ratelimit-reset-requests` / `x-ratelimit-reset-tokens` (OpenAI): Go durations like
  `1s`, `6m0s`, `20ms`, `1h2m3.5s`, the time until that quota is full again. When both
  are there the longer one is taken: the request needs both quotas.
"""

from __future__ import annotations

import email.utils
import re
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ..http.headers import Headers

_UNIX_TIME_FLOOR = 1e9  # 2001-09-09; no API asks for a 31-year wait
_DIGITS = re.compile(r"^[0-9]{1,12}$")  # ASCII only: "²".isdigit() is True
_NUMBER = re.compile(r"^[0-9]{1,15}(?:\.[0-9]{1,6})?$")
# Go's time.Duration.String(): a sequence of number-unit pairs, largest unit first.
_GO_PART = re.compile(r"([0-9]{1,12}(?:\.[0-9]{1,9})?)(h|ms|us|µs|ns|m|s)")
_GO_UNITS = {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 1e-3, "us": 1e-6, "µs": 1e-6, "ns": 1e-9}
_GO_MAX_LENGTH = 64
_RESETS = ("x-ratelimit-reset-requests", "x-ratelimit-reset-tokens")


def asked_wait(headers: Headers, now: float) -> float | None:
    """Seconds to wait, or None when no header says it in a form we can read.

    `now` is the wall clock (Unix time), for HTTP dates and Unix-time resets.
    """
    value = headers.get("retry-after-ms")
    if value is not None:
        millis = _number(value.strip())
        if millis is not None:
            return millis / 1000
    value = headers.get("retry-after")
    if value is not None:
        seconds = _seconds_or_date(value.strip(), now)
        if seconds is not None:
            return seconds
    for name in ("ratelimit-reset", "x-ratelimit-reset"):
        value = headers.get(name)
        if value is None:
            continue
        number = _number(value.strip())
        if number is not None:
            return max(0.0, number - now if number > _UNIX_TIME_FLOOR else number)
    resets = [_go_duration(value.strip()) for name in _RESETS if (value := headers.get(name))]
    known = [seconds for seconds in resets if seconds is not None]
    return max(known) if known else None


def _number(text: str) -> float | None:
    return float(text) if _NUMBER.match(text) else None


def _go_duration(text: str) -> float | None:
    """`1h2m3.5s` -> 3723.5; None unless the whole text is number-unit pairs."""
    if not text or len(text) > _GO_MAX_LENGTH:
        return None
    seconds, at = 0.0, 0
    for part in _GO_PART.finditer(text):
        if part.start() != at:
            return None
        seconds += float(part.group(1)) * _GO_UNITS[part.group(2)]
        at = part.end()
    return seconds if at == len(text) else None


def _seconds_or_date(text: str, now: float) -> float | None:
    if _DIGITS.match(text):
        return float(text)
    try:
        when = email.utils.parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        return None  # an HTTP date is always GMT; a zone-less one is not one
    return max(0.0, when.timestamp() - now)

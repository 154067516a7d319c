"""How long an upstream asks us to wait: `Retry-After`, `RateLimit-Reset`, `X-RateLimit-Reset`.

`Retry-After` is delta-seconds or an HTTP date (RFC 9110 section 10.2.3). `RateLimit-Reset`
(IETF httpapi draft) is delta-seconds. `X-RateLimit-Reset` is delta-seconds for some APIs
and a Unix time for others (GitHub): a value past 10^9 is read as a Unix time.
"""

from __future__ import annotations

import email.utils
import re
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .http.headers import Headers

_UNIX_TIME_FLOOR = 1e9  # 2001-09-09; no API asks for a 31-year wait
_DIGITS = re.compile(r"^[0-9]{1,12}$")  # ASCII only: "²".isdigit() is True
_NUMBER = re.compile(r"^[0-9]{1,15}(?:\.[0-9]{1,6})?$")


def asked_wait(headers: Headers, now: float) -> float | None:
    """Seconds to wait, or None when no header says it in a form we can read.

    `now` is the wall clock (Unix time), for HTTP dates and Unix-time resets.
    """
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
    return None


def _number(text: str) -> float | None:
    return float(text) if _NUMBER.match(text) else None


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

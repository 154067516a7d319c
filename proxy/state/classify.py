"""One place that says what an attempt's result was and whether it may be retried.

An attempt ends in a status (the upstream answered) or a reason (`connect_error`,
`tls_error`, `reset`, `timeout`, `bad_response`). `retry.on` and
`circuit_breaker.failure_on` are both `Conditions` over those; the outcome of a relayed
answer (`ok` or `failed`) comes from `is_failure()`.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ..http.headers import Headers

# RFC 9110 section 9.2.2: repeating these has the same effect as sending them once.
IDEMPOTENT_METHODS = frozenset({"GET", "HEAD", "OPTIONS", "PUT", "DELETE", "TRACE"})
# After these the request surely never reached the upstream: safe to send again, whatever
# the method. (Retry only meets `connect_error`: local rejections end its loop.)
NOTHING_SENT = frozenset({"connect_error", "circuit_open", "rate_limited", "bulkhead_full"})


def is_failure(status: int) -> bool:
    """An answer that says the upstream failed (rather than that the request was wrong)."""
    return status >= 500


class Conditions:
    """A list of conditions (`retry.on`, `failure_on`), compiled: reasons, exact statuses
    and status classes."""

    def __init__(self, conditions: Iterable[str]) -> None:
        conditions = tuple(conditions)
        self.reasons = frozenset(c for c in conditions if not c[0].isdigit())
        self.statuses = frozenset(int(c) for c in conditions if c.isdigit())
        self.classes = frozenset(int(c[0]) for c in conditions if c.endswith("xx"))

    def matches_status(self, status: int) -> bool:
        return status in self.statuses or status // 100 in self.classes

    def matches_reason(self, reason: str) -> bool:
        return reason in self.reasons


def may_repeat(
    method: str, condition: str, headers: Headers, idempotency_header: str | None
) -> bool:
    """May this request be sent again (to the same upstream or another) after `condition`?
    Yes when nothing was sent, when the method is idempotent, or when the request carries
    the idempotency header (RFC 9110 section 9.2.2)."""
    if condition in NOTHING_SENT or method in IDEMPOTENT_METHODS:
        return True
    return idempotency_header is not None and idempotency_header in headers

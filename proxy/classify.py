"""One place that says what an attempt's result was and whether it may be retried.

An attempt ends in a status (the upstream answered) or a reason (`connect_error`,
`tls_error`, `reset`, `timeout`). `retry.on` and `circuit_breaker.failure_on` are both
`Conditions` over those; the outcome of a relayed answer (`ok` or `failed`) comes from
`is_failure()`.
"""

from __future__ import annotations

from collections.abc import Iterable

# RFC 9110 section 9.2.2: repeating these has the same effect as sending them once.
IDEMPOTENT_METHODS = frozenset({"GET", "HEAD", "OPTIONS", "PUT", "DELETE", "TRACE"})
# Nothing reached the upstream: safe to repeat for any method.
NOTHING_SENT = frozenset({"connect_error"})


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


def may_repeat(method: str, condition: str, idempotency_key: bool) -> bool:
    """May a request with this method be sent again after this condition?"""
    return condition in NOTHING_SENT or method in IDEMPOTENT_METHODS or idempotency_key

"""What one delivery's result means for its message: delivered, again later, a dead
letter now, or a pause of the whole queue that spends no attempt. Pure: time passed in.

- A 2xx is delivered; a fallback's answer never is (delivery pipelines have no fallback,
  and one that came anyway counts as the failure that triggered it).
- 5xx and failures without an answer (connect_error, reset, timeout, ...) go again after
  the schedule's wait, or the upstream's Retry-After when it asks for longer; so do the
  4xx that `retry.on` names (429 by default).
- Any other answer (400, 401, 404, 422, a 3xx) is final: a dead letter at once, with it.
- Fender's own rejections (circuit_open, rate_limited: a cool-down, bulkhead_full, shed)
  mean the upstream was not called: the queue pauses for the time they give, and the
  message goes back unspent.
- Out of attempts (`max_attempts`) or of time (`max_age`, from `since`): a dead letter.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..config.queue import Queue
from ..http.headers import Headers
from ..state.classify import Conditions
from ..state.retry_after import asked_wait

DELIVERED, AGAIN, FINAL, PAUSE = "delivered", "again", "final", "pause"
PAUSES = frozenset({"circuit_open", "rate_limited", "bulkhead_full", "shed"})
MIN_PAUSE = 0.1  # seconds: a rejection without a wait still holds the queue this long


@dataclass(frozen=True, slots=True)
class Result:
    """One delivery, as it ended: an answer (`status`) or a failure (`reason`)."""

    status: int | None = None
    reason: str = ""  # x-fender-reason, or the failure's reason
    rejected: bool = False  # answered by Fender itself: the upstream was not called
    outcome: str = "ok"
    headers: Headers | None = None
    retry_after: float | None = None  # a rejection's own


@dataclass(frozen=True, slots=True)
class Verdict:
    kind: str  # DELIVERED, AGAIN, FINAL or PAUSE
    wait: float = 0.0  # AGAIN: the upstream's ask (0: none); PAUSE: how long
    reason: str = ""


def judge(result: Result, retry_on: Conditions, now_wall: float) -> Verdict:
    if result.rejected or result.outcome == "fallback":
        if result.reason in PAUSES:
            return Verdict(PAUSE, max(result.retry_after or 0.0, MIN_PAUSE), result.reason)
        return Verdict(AGAIN, 0.0, result.reason)
    status = result.status
    if status is None:
        return Verdict(AGAIN, 0.0, result.reason)
    if 200 <= status < 300:
        return Verdict(DELIVERED)
    if status >= 500 or retry_on.matches_status(status):
        asked = asked_wait(result.headers, now_wall) if result.headers is not None else None
        return Verdict(AGAIN, asked or 0.0, result.reason or "upstream_status")
    return Verdict(FINAL, 0.0, "rejected")


@dataclass(frozen=True, slots=True)
class Next:
    """What becomes of the message: `dead` (with why) or again at `due`."""

    dead: str = ""  # rejected, max_attempts, expired
    due: float = 0.0


def next_step(verdict: Verdict, config: Queue, attempts: int, since: float, now: float) -> Next:
    """After an attempt that was not a delivery (`attempts` now counts it)."""
    if verdict.kind == FINAL:
        return Next(dead="rejected")
    if attempts >= config.max_attempts:
        return Next(dead="max_attempts")
    due = now + max(config.wait(attempts), verdict.wait)
    if due > since + config.max_age:
        return Next(dead="expired")
    return Next(due=due)

"""What a queue keeps: a message as accepted, as taken for delivery, and how a delivery
ended (its settlement).

Times here are wall-clock (Unix) seconds: they outlive the process, unlike monotonic
ones. Header values travel as the wire lines they were (`Name: value`), joined by CRLF,
so that a value with obs-text is delivered byte for byte.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from typing import Any

from ..http.headers import Headers

# States of a message.
PENDING, DELIVERED, DEAD = "pending", "delivered", "dead"
# How a delivery ended.
DONE = "delivered"  # a 2xx: settled for good
RETRY = "retry"  # failed: again after `due`, one attempt spent
FAIL = "dead"  # a dead letter now
RELEASE = "release"  # back to the queue, no attempt spent (paused, draining, cancelled)


def new_id(now: float | None = None) -> str:
    """A delivery id: milliseconds since the epoch then randomness, so ids sort by time."""
    ms = int((time.time() if now is None else now) * 1000)
    return f"{ms:012x}{os.urandom(8).hex()}"


def pack_headers(headers: Headers) -> bytes:
    return b"\r\n".join(headers.lines)


def unpack_headers(blob: bytes | None) -> Headers:
    if not blob:
        return Headers()
    lines = blob.split(b"\r\n")
    keys = [text.split(b":", 1)[0].lower() for text in lines]
    return Headers.of(keys, lines)


@dataclass(slots=True)
class NewMessage:
    """A request as the acceptor keeps it (the upstream's `headers.set` values left out:
    they are added at delivery time, so that a rotated key is the one used)."""

    id: str
    route: str
    method: str
    target: str
    headers: bytes
    body: bytes | None
    request_id: str
    key: str  # the fairness key's value ("" without `key`)
    idem: str | None  # the app's idempotency key, which deduplicates
    accepted: float


@dataclass(slots=True)
class Message:
    """A message taken for delivery. `handle` is the store's own (an SQLite row number,
    a Redis stream entry)."""

    id: str
    handle: Any
    route: str
    method: str
    target: str
    headers: bytes
    body: bytes | None
    request_id: str
    key: str
    accepted: float
    since: float  # the start of this round of attempts (acceptance, or a retry by hand)
    attempts: int
    history: list[dict[str, Any]] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class Settlement:
    """How one delivery ended: `kind` is DONE, RETRY, FAIL or RELEASE."""

    kind: str
    attempt: dict[str, Any] | None = None  # {at, status, reason, ms}, None: no attempt made
    due: float = 0.0  # RETRY, RELEASE: when it may go again
    reason: str = ""  # FAIL: why (rejected, max_attempts, expired, no_route)
    keep_until: float = 0.0  # DONE: how long the delivered message stays known (max_age)


def attempt_record(at: float, status: int | None, reason: str, ms: float) -> dict[str, Any]:
    return {"at": round(at, 3), "status": status, "reason": reason, "ms": round(ms, 1)}


MAX_HISTORY = 50  # attempts kept per message (the last ones)


def add_attempt(history: list[dict[str, Any]], attempt: dict[str, Any] | None) -> list[Any]:
    if attempt is None:
        return history
    return [*history, attempt][-MAX_HISTORY:]


@dataclass(frozen=True, slots=True)
class QueueStats:
    depth: int  # waiting, in flight included
    oldest_s: float  # age of the oldest waiting message (0 when none)
    dead: int
    in_flight: int
    paused: bool

    def view(self) -> dict[str, Any]:
        return {
            "depth": self.depth,
            "oldest_s": round(self.oldest_s, 3),
            "dead": self.dead,
            "in_flight": self.in_flight,
            "paused": self.paused,
        }


def public_view(row: dict[str, Any]) -> dict[str, Any]:
    """What the control API shows of a message: never its body or header values."""
    history = row.get("history") or []
    return {
        "id": row["id"],
        "queue": row["queue"],
        "route": row["route"],
        "state": row["state"],
        "method": row["method"],
        "key": row["key"],
        "accepted": row["accepted"],
        "attempts": row["attempts"],
        "history": history,
        "last_answer": history[-1] if history else None,
        "reason": row.get("reason") or None,
        "settled": row.get("settled"),
        "body_bytes": row.get("body_bytes", 0),
        "header_names": row.get("header_names", []),
    }


def header_names(blob: bytes | None) -> list[str]:
    return [k.decode("latin-1") for k in unpack_headers(blob).keys]

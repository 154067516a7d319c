"""The Store protocol: what a queue needs of where its messages live.

Two stores implement it: `SqliteStore` (embedded, one process's file, group commit) and
`RedisStore` (a Redis Stream with a consumer group, shared by a fleet). Queues of one
store are told apart by name. Every method may raise `QueueUnavailable` (the store cannot
be read or written now); `accept` also raises `QueueFull`. Methods are coroutines that
are safe to await from a request's pipeline, which runs without a Task of its own.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

from .message import Message, NewMessage, QueueStats, Settlement


class QueueFull(Exception):
    """The queue holds `max_messages`: the app gets 503 `queue_full`."""


class QueueUnavailable(Exception):
    """The store cannot take a write (disk error, Redis down, file in use): 503
    `queue_unavailable`, never a 202."""


class Store(Protocol):
    kind: str  # "sqlite" or "redis"
    # Seconds between looks for work when idle; None: the store says when (on_work()).
    poll: float | None

    async def open(self) -> None:
        """Connect (or open the file); raises QueueUnavailable, and may be called again."""
        ...

    @property
    def ready(self) -> bool: ...

    async def close(self) -> None: ...

    def on_work(self, callback: Callable[[str], None]) -> None:
        """`callback(queue)` is called when a queue may have new work (an accept)."""
        ...

    async def accept(
        self, queue: str, message: NewMessage, *, max_messages: int, dedup_since: float
    ) -> tuple[str, bool]:
        """Keep `message` durably; returns its id and whether it was a duplicate (the same
        idempotency key accepted after `dedup_since`: the earlier id, nothing stored)."""
        ...

    async def take(self, queue: str, limit: int, now: float, hold_for: float) -> list[Message]:
        """Up to `limit` messages due now, for this process to deliver; nobody else is
        given them for `hold_for` seconds."""
        ...

    def next_due(self, queue: str) -> float | None:
        """When the next waiting message falls due (wall time), if the store knows."""
        ...

    async def settle(self, queue: str, message: Message, settlement: Settlement) -> None: ...

    async def stats(self, queue: str, now: float) -> QueueStats: ...

    def snapshot(self, queue: str, now: float) -> QueueStats | None:
        """The numbers now, when the store knows them without asking anyone (else None:
        the last ones read by stats() stand)."""
        ...

    async def view(self, queue: str, message_id: str) -> dict[str, Any] | None:
        """A message's public view (public_view()), or None."""
        ...

    async def dead(self, queue: str, limit: int) -> list[dict[str, Any]]:
        """The newest dead letters first."""
        ...

    async def redrive(self, queue: str, message_id: str | None, now: float) -> int:
        """Dead letters back to the queue (one, or all when None) with fresh attempts."""
        ...

    async def delete(self, queue: str, message_id: str) -> bool:
        """Forget a dead letter."""
        ...

    async def set_paused(self, queue: str, paused: bool) -> None: ...

    async def purge(self, queue: str, before: float) -> None:
        """Forget delivered messages settled before `before` (their dedup is over)."""
        ...

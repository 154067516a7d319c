"""The `queues:` sections and a route's `delivery:`: durable queues that make a route
asynchronous (accept durably, answer 202, deliver with the route's policies).

A store is a URL: `sqlite:///abs/path.db` (or `sqlite://relative.db`, relative to the
policy file) for the embedded default, `redis://host:port/db` (or `rediss://`) for a queue
that a fleet of replicas shares. Queues may share one SQLite file.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import urlsplit

from pydantic import AfterValidator, Field, PrivateAttr, ValidationInfo, model_validator

from .types import Name, Section, unit
from .units import Duration, Size

SQLITE, REDIS = "sqlite", "redis"


def _check_store(value: str) -> str:
    kind = store_kind(value)
    if kind == SQLITE:
        if not value.removeprefix("sqlite://").strip():
            raise ValueError("give the SQLite file's path: sqlite:///var/lib/fender/queue.db")
        return value
    parts = urlsplit(value)
    try:
        parts.port  # noqa: B018 (raises on a port that is not a number)
    except ValueError:
        raise ValueError("the Redis URL's port is not a number") from None
    if not parts.hostname:
        raise ValueError("the Redis URL names no host: redis://host:6379/0")
    db = parts.path.strip("/")
    if db and not db.isdigit():
        raise ValueError("the Redis URL's path is a database number, like /0")
    return value


def store_kind(url: str) -> str:
    """`sqlite` or `redis`, from a store URL."""
    if url.startswith("sqlite://"):
        return SQLITE
    if url.startswith(("redis://", "rediss://")):
        return REDIS
    raise ValueError("a store is sqlite:///PATH or redis://HOST:PORT/DB (or rediss://)")


StoreUrl = Annotated[str, AfterValidator(_check_store)]


def _creatable(directory: Path) -> str | None:
    """Why a file could not be made in `directory` (its missing parents made first)."""
    for folder in (directory, *directory.parents):
        if folder.exists():
            if not folder.is_dir():
                return f"{folder} is not a directory"
            if not os.access(folder, os.W_OK | os.X_OK):
                return f"{folder} is not writable"
            return None
    return f"no part of {directory} exists"


class Queue(Section):
    """A durable queue: what its route accepts is kept until it is delivered or lands in
    the dead letters."""

    store: StoreUrl = "sqlite:///var/lib/fender/queues.db"
    """Where messages are kept: `sqlite:///PATH` (one process's; WAL, fsync'd before the
    202) or `redis://HOST:PORT/DB` (a Redis Stream every replica delivers from)."""
    schedule: tuple[Duration, ...] = Field(
        default=("5s", "30s", "2m", "10m", "30m", "1h", "2h", "4h"),
        min_length=1,
        validate_default=True,
    )
    """Waits between delivery attempts; the last one repeats. An upstream's Retry-After
    that asks for longer is honoured."""
    max_attempts: int = Field(default=15, ge=1, le=10_000)
    """Deliveries in all, the first included; then the message is a dead letter. A
    paused queue (open circuit, cool-down) spends none."""
    max_age: Duration = unit("24h")
    """A message not delivered this long after it was accepted (or retried from the dead
    letters) is a dead letter (`expired`). Also how long the app's idempotency key
    deduplicates."""
    max_messages: int = Field(default=100_000, ge=1)
    """Messages waiting (dead letters not counted); when reached, the app gets 503
    `queue_full`, never a silent drop."""
    max_body: Size = unit("1MiB")
    """Larger request bodies get 413 `body_too_large`."""
    concurrency: int = Field(default=8, ge=1, le=1024)
    """Deliveries in flight at once, per replica."""
    key: str | None = None
    """`header:NAME`: fair turns between the values of this header (tenants), FIFO within
    one value. None: one FIFO."""
    delivery_timeout: Duration = unit("5m")
    """The longest one delivery may take (the route's own timeouts usually end it first);
    on Redis, a message held longer by a replica (it died) is taken over by another."""

    _path: Path | None = PrivateAttr(default=None)

    @model_validator(mode="after")
    def _check(self, info: ValidationInfo) -> Queue:
        if self.key is not None:
            kind, _, name = self.key.partition(":")
            if kind != "header" or not name.strip():
                raise ValueError("key is `header:NAME`")
        if self.delivery_timeout <= 0 or self.max_age <= 0:
            raise ValueError("max_age and delivery_timeout must be more than 0s")
        if store_kind(self.store) == SQLITE:
            text = self.store.removeprefix("sqlite://")
            path = Path(text)
            base = (info.context or {}).get("base_dir")
            if not path.is_absolute() and base is not None:
                path = Path(base) / path
            if path.is_dir():
                raise ValueError(f"store {path} is a directory, not a file")
            why = _creatable(path.parent)
            if why is not None:
                raise ValueError(f"cannot create the store {path}: {why}")
            self._path = path
        return self

    @property
    def path(self) -> Path | None:
        """The SQLite file, resolved (None for Redis)."""
        return self._path

    @property
    def header(self) -> str | None:
        """The request header `key` reads (lower case)."""
        return self.key.partition(":")[2].strip().lower() if self.key else None

    def wait(self, attempts: int) -> float:
        """The wait after the `attempts`-th delivery failed (1-based)."""
        return self.schedule[min(attempts, len(self.schedule)) - 1]


class Delivery(Section):
    """Makes a route asynchronous: its requests are kept in a queue and answered 202."""

    queue: Name
    """A name under `queues`."""


def redacted_store(url: str) -> str:
    """A store URL without its password, for GET /config and the hash."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":<redacted>@", 1)
    return parts._replace(netloc=netloc).geturl()


def queue_problems(data: dict[str, Any], route_queue: Any, at: tuple[Any, ...]) -> list[Any]:
    """A route's `delivery.queue` that names no queue."""
    queues = data.get("queues")
    known = queues if isinstance(queues, dict) else {}
    if isinstance(route_queue, str) and route_queue not in known:
        names = ", ".join(sorted(known)) or "none"
        return [(at, f"no queue named {route_queue!r} (known: {names})")]
    return []

"""The last good answers of a route, kept for the `stale` fallback.

An answer is kept when it is a 2xx to a cacheable method, meant for anyone (no cookie, not
private, no credential of the app's own on the request), and its body, copied as it
streams to the app, finishes within the size limit. Bounded by entry count and bytes,
the least recently stored dropped first. Served with an `Age` header.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass

from .clock import Clock
from .config_policy import Stale
from .http.headers import Headers
from .http.stream import BodyStream

REFRESH = 1.0  # seconds: an entry younger than this is not replaced


@dataclass(slots=True)
class Entry:
    stored: float
    status: int
    headers: Headers
    body: bytes


class StaleCache:
    def __init__(self, config: Stale, clock: Clock) -> None:
        self.max_age = config.max_age
        self.max_entries = config.max_entries
        self.max_bytes = config.max_bytes
        self.entry_limit = max(1, config.max_bytes // 10)
        self.methods = frozenset(config.methods)
        self.clock = clock
        self.bytes = 0
        self._entries: OrderedDict[tuple[str, str], Entry] = OrderedDict()

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, method: str, target: str) -> tuple[Entry, float] | None:
        """The kept answer and its age, if there is one young enough."""
        entry = self._entries.get((method, target))
        if entry is None:
            return None
        age = self.clock.monotonic() - entry.stored
        return (entry, age) if age <= self.max_age else None

    def keeps(self, method: str, status: int, headers: Headers, personal: bool) -> bool:
        """May this answer be served later, to anyone? Not when it was for one user: the
        request carried the app's own credentials or cookies (`personal`), or the answer
        sets a cookie or says it is private or not to be stored."""
        if method not in self.methods or not 200 <= status < 300 or personal:
            return False
        if "set-cookie" in headers:
            return False
        control = headers.get("cache-control", "").lower()
        return "private" not in control and "no-store" not in control

    def fresh(self, method: str, target: str) -> bool:
        """Was an answer kept a moment ago? Then a busy path need not keep this one."""
        old = self._entries.get((method, target))
        return old is not None and self.clock.monotonic() - old.stored < REFRESH

    def put(self, method: str, target: str, status: int, headers: Headers, body: bytes) -> None:
        """Keep a whole answer (when it is within the size limit)."""
        if len(body) <= self.entry_limit:
            entry = Entry(self.clock.monotonic(), status, headers.copy(), body)
            self._put((method, target), entry)

    def tee(
        self, method: str, target: str, status: int, headers: Headers, body: BodyStream
    ) -> BodyStream:
        """The body as it streams, kept once it has ended within the size limit. (The
        headers are copied now: Fender adds its own to the live answer before it streams.)"""
        body.observe(_Copy(self, (method, target), status, headers.copy()))
        return body

    def _put(self, key: tuple[str, str], entry: Entry) -> None:
        old = self._entries.pop(key, None)
        if old is not None:
            self.bytes -= len(old.body)
        self._entries[key] = entry
        self.bytes += len(entry.body)
        while len(self._entries) > self.max_entries or self.bytes > self.max_bytes:
            _, dropped = self._entries.popitem(last=False)
            self.bytes -= len(dropped.body)


class _Copy:
    """Watches an answer stream by and keeps it, if it ends within the size limit."""

    __slots__ = ("cache", "chunks", "headers", "key", "size", "status")

    def __init__(
        self, cache: StaleCache, key: tuple[str, str], status: int, headers: Headers
    ) -> None:
        self.cache, self.key, self.status, self.headers = cache, key, status, headers
        self.chunks: list[bytes] | None = []
        self.size = 0

    def chunk(self, data: bytes) -> None:
        if self.chunks is not None:
            self.size += len(data)
            if self.size > self.cache.entry_limit:
                self.chunks = None
            else:
                self.chunks.append(data)

    def end(self) -> None:
        if self.chunks is not None:
            cache = self.cache
            body = b"".join(self.chunks)
            cache._put(self.key, Entry(cache.clock.monotonic(), self.status, self.headers, body))

    def fail(self, reason: str) -> None:
        self.chunks = None

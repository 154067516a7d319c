"""The last good answers of a route, kept for the `stale` fallback.

An answer is kept when it is a 2xx to a cacheable method, meant to be stored (no cookie
set, not private, not no-store, not `Vary: *`), and its body, copied as it streams to
the app, finishes within the size limit. Bounded by entry count and bytes, the least
recently stored dropped first. Served with an `Age` header.

An answer is only ever served to a request that would have selected it (RFC 9111
section 4.1): the key holds, besides method and target, a SHA-256 digest of the values of
- the credentials the app sent (`authorization`, `cookie`, `proxy-authorization`,
  `x-api-key`, `api-key`, and the header a route's rate-limit key reads): an answer to
  one user is kept under that user's credential, and never served to another;
- `Accept-Encoding`, always: a gzip body never goes to an app that did not ask for gzip;
- the request headers the answer's `Vary` names.
Only digests are kept, never a credential itself.
"""

from __future__ import annotations

import hashlib
from collections import Counter, OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass

from ..config.policy import Stale
from ..http.headers import Headers
from ..http.stream import BodyStream
from .clock import Clock

REFRESH = 1.0  # seconds: an entry younger than this is not replaced
# Request headers that say who is asking (headers.SENSITIVE, less the response's own).
CREDENTIALS = ("api-key", "authorization", "cookie", "proxy-authorization", "x-api-key")
_ALWAYS = ("accept-encoding",)

Resource = tuple[str, str]  # method, target
Key = tuple[str, str, tuple[str, ...], str]  # method, target, Vary names, digest
Request = Headers | None  # what the app sent


@dataclass(slots=True)
class Entry:
    stored: float
    status: int
    headers: Headers
    body: bytes


def vary_names(headers: Headers) -> tuple[str, ...] | None:
    """The request headers an answer's `Vary` names (sorted, lower case); None for `*`."""
    names = {
        name.strip().lower()
        for value in headers.getall("vary", [])
        for name in value.split(",")
        if name.strip()
    }
    return None if "*" in names else tuple(sorted(names))


class StaleCache:
    def __init__(self, config: Stale, clock: Clock, credentials: Iterable[str] = ()) -> None:
        self.max_age = config.max_age
        self.max_entries = config.max_entries
        self.max_bytes = config.max_bytes
        self.entry_limit = max(1, config.max_bytes // 10)
        self.methods = frozenset(config.methods)
        self.clock = clock
        self.bytes = 0
        selectors = tuple(sorted({*CREDENTIALS, *(c.lower() for c in credentials)}))
        selectors += tuple(n for n in _ALWAYS if n not in selectors)
        self._selectors = tuple(name.encode("latin-1") for name in selectors)
        self._entries: OrderedDict[Key, Entry] = OrderedDict()
        # The Vary names of the answer last kept for a resource, while it has entries.
        self._vary: dict[Resource, tuple[str, ...]] = {}
        self._count: Counter[Resource] = Counter()
        self._stored: dict[Resource, float] = {}  # when each resource was last kept

    def __len__(self) -> int:
        return len(self._entries)

    def keeps(self, method: str, status: int, headers: Headers) -> bool:
        """May this answer be served later, to a request like this one? Not when it sets a
        cookie, says it is private or not to be stored, or varies on anything (`*`)."""
        if method not in self.methods or not 200 <= status < 300:
            return False
        if "set-cookie" in headers:
            return False
        control = headers.get("cache-control", "").lower()
        if "private" in control or "no-store" in control:
            return False
        return vary_names(headers) is not None

    def key(self, method: str, target: str, request: Request, headers: Headers) -> Key:
        """Where an answer (its `headers`) to this request is kept: see the module docstring."""
        vary = vary_names(headers) or ()
        return (method, target, vary, self._digest(request, vary))

    def get(self, method: str, target: str, request: Request) -> tuple[Entry, float] | None:
        """The answer kept for this request and its age, if there is one young enough."""
        vary = self._vary.get((method, target))
        if vary is None:
            return None
        entry = self._entries.get((method, target, vary, self._digest(request, vary)))
        if entry is None:
            return None
        age = self.clock.monotonic() - entry.stored
        return (entry, age) if age <= self.max_age else None

    def fresh(self, method: str, target: str) -> bool:
        """Was an answer to this resource kept a moment ago? Then a busy path need not
        keep this one (nor work out its key)."""
        stored = self._stored.get((method, target))
        return stored is not None and self.clock.monotonic() - stored < REFRESH

    def put(self, key: Key, status: int, headers: Headers, body: bytes) -> None:
        """Keep a whole answer (when it is within the size limit)."""
        if len(body) <= self.entry_limit:
            self._put(key, Entry(self.clock.monotonic(), status, headers.copy(), body))

    def tee(self, key: Key, status: int, headers: Headers, body: BodyStream) -> BodyStream:
        """The body as it streams, kept once it has ended within the size limit. (The
        headers are copied now: Fender adds its own to the live answer before it streams.)"""
        body.observe(_Copy(self, key, status, headers.copy()))
        return body

    def _digest(self, request: Request, vary: tuple[str, ...]) -> str:
        digest = hashlib.sha256()
        for name in (*self._selectors, *(v.encode("latin-1") for v in vary)):
            digest.update(name + b":")
            for value in request.raw_all(name) if request is not None else ():
                digest.update(value + b"\0")
            digest.update(b"\n")
        return digest.hexdigest()

    def _put(self, key: Key, entry: Entry) -> None:
        resource = (key[0], key[1])
        old = self._entries.pop(key, None)
        if old is not None:
            self.bytes -= len(old.body)
        else:
            self._count[resource] += 1
        self._entries[key] = entry
        self._vary[resource] = key[2]
        self._stored[resource] = entry.stored
        self.bytes += len(entry.body)
        while len(self._entries) > self.max_entries or self.bytes > self.max_bytes:
            dropped_key, dropped = self._entries.popitem(last=False)
            self.bytes -= len(dropped.body)
            self._forget(dropped_key)

    def _forget(self, key: Key) -> None:
        resource = (key[0], key[1])
        self._count[resource] -= 1
        if self._count[resource] <= 0:
            del self._count[resource]
            self._vary.pop(resource, None)
            self._stored.pop(resource, None)


class _Copy:
    """Watches an answer stream by and keeps it, if it ends within the size limit."""

    __slots__ = ("cache", "chunks", "headers", "key", "size", "status")

    def __init__(self, cache: StaleCache, key: Key, status: int, headers: Headers) -> None:
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

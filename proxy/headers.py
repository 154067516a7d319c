"""Header hygiene in both directions, compiled once per upstream.

Hop-by-hop headers describe one connection, not the message, so a proxy must not pass
them on: the fixed list of RFC 9110 section 7.6.1 plus every header that `Connection`
names. Fender's own headers (`set`, x-request-id, X-Forwarded-*) are added after the
cleaning, so an app cannot remove them by listing them in `Connection`.
"""

from __future__ import annotations

import os
import random

from multidict import CIMultiDict, CIMultiDictProxy

from .config import HeaderRules

HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-connection",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
        "proxy-authenticate",
        "proxy-authorization",
    }
)

# Never logged, whatever their value (the log writes no header values at all; this is the
# list a future debug option must honour).
SENSITIVE = frozenset(
    {"authorization", "cookie", "set-cookie", "proxy-authorization", "x-api-key", "api-key"}
)

# Request headers Fender sets itself or that the client library must derive.
_REQUEST_OWN = frozenset({"host", "expect", "x-request-id", "x-forwarded-for", "x-forwarded-proto"})
# Response headers the server writes itself from the reply's length.
_RESPONSE_OWN = frozenset({"content-length"})

_MAX_REQUEST_ID = 200


def connection_listed(headers: CIMultiDictProxy[str]) -> frozenset[str]:
    """Header names that the `Connection` header declares hop-by-hop."""
    values = headers.getall("connection", ())
    return frozenset(
        token.strip().lower() for value in values for token in value.split(",") if token.strip()
    )


def _copy_without(headers: CIMultiDictProxy[str], drop: frozenset[str]) -> CIMultiDict[str]:
    out: CIMultiDict[str] = CIMultiDict()
    if "connection" in headers:
        drop = drop | connection_listed(headers)
    for name, value in headers.items():
        if name.lower() not in drop:
            out.add(name, value)
    return out


class RequestHeaders:
    """Cleans an app's request headers for one upstream and adds Fender's own."""

    def __init__(self, rules: HeaderRules, *, forwarded: bool) -> None:
        self._drop = HOP_BY_HOP | _REQUEST_OWN | frozenset(rules.remove) | frozenset(rules.set)
        self._set = tuple(rules.set.items())
        self._forwarded = forwarded

    def build(
        self, incoming: CIMultiDictProxy[str], request_id: str, client_ip: str | None
    ) -> CIMultiDict[str]:
        out = _copy_without(incoming, self._drop)
        for name, value in self._set:
            out[name] = value
        out["x-request-id"] = request_id
        if self._forwarded:
            previous = incoming.getall("x-forwarded-for", ())
            out["x-forwarded-for"] = ", ".join([*previous, client_ip or "unknown"])
            out["x-forwarded-proto"] = "http"
        return out


def response_headers(incoming: CIMultiDictProxy[str]) -> CIMultiDict[str]:
    """An upstream's response headers, cleaned for the app (`x-fender-*`: see server.mark)."""
    return _copy_without(incoming, HOP_BY_HOP | _RESPONSE_OWN)


def id_source() -> random.Random:
    """Request ids need to be unique, not secret: a PRNG seeded from the OS once, rather
    than a system call per request."""
    return random.Random(os.urandom(16))


def request_id(incoming: CIMultiDictProxy[str], ids: random.Random) -> str:
    """The app's x-request-id when it is sane, or a new random one."""
    given = incoming.get("x-request-id")
    if given and len(given) <= _MAX_REQUEST_ID and given.isprintable():
        return given
    return f"{ids.getrandbits(128):032x}"

"""Header hygiene in both directions, compiled once per upstream.

Hop-by-hop headers describe one connection, not the message, so a proxy must not pass
them on: the fixed list of RFC 9110 section 7.6.1 plus every header that `Connection`
names. Framing is Fender's own: it writes the Content-Length it framed a body by (never
the app's spelling of it, `005` or `0200`) or chunked encoding, and drops the underscore
twins `Content_Length` and `Transfer_Encoding` that CGI-style servers read as the real
ones. Fender's own headers (`set`, x-request-id, X-Forwarded-*) are added after the
cleaning, so an app cannot remove them by listing them in `Connection`.
"""

from __future__ import annotations

import os
import re

from ..config.model import HeaderRules
from .headers import Headers, line

HOP_BY_HOP = frozenset(
    {
        b"connection",
        b"keep-alive",
        b"proxy-connection",
        b"te",
        b"trailer",
        b"transfer-encoding",
        b"upgrade",
        b"proxy-authenticate",
        b"proxy-authorization",
    }
)
FRAMING = frozenset({b"content-length", b"transfer-encoding"})
# Underscore twins of framing headers: a server that maps `-` and `_` alike (CGI, PHP,
# some WSGI stacks) would frame the body by them.
TWINS = frozenset({b"content_length", b"transfer_encoding"})

# Never logged, whatever their value (the log writes no header values at all; this is the
# list a future debug option must honour), and what makes an answer one user's own.
SENSITIVE = frozenset(
    {"authorization", "cookie", "set-cookie", "proxy-authorization", "x-api-key", "api-key"}
)

# Request headers Fender sets itself or derives from the framing.
_REQUEST_OWN = frozenset({b"host", b"expect", b"x-request-id"}) | FRAMING | TWINS
_FORWARDED = frozenset({b"x-forwarded-for", b"x-forwarded-proto"})

# Kept as the app sent it only when it can go into a JSON log line unescaped.
_SANE_ID = re.compile(rb"[A-Za-z0-9._:/=+@-]{1,200}")


class RequestHeaders:
    """Cleans an app's request headers for one upstream and adds Fender's own."""

    def __init__(self, rules: HeaderRules, *, forwarded: bool) -> None:
        set_keys = frozenset(k.encode("latin-1") for k in rules.set)
        removed = frozenset(k.encode("latin-1") for k in rules.remove)
        # The app's X-Forwarded-* never pass as they are: appended to, or dropped.
        self._drop = HOP_BY_HOP | _REQUEST_OWN | _FORWARDED | removed | set_keys
        self._set = tuple(
            (k.encode("latin-1"), line(k.encode("latin-1"), v.encode("latin-1")))
            for k, v in rules.set.items()
        )
        self._forwarded = forwarded

    def build(self, incoming: Headers, request_id: str, client_ip: str | None) -> Headers:
        drop = self._drop
        if b"connection" in incoming.keys:
            drop = drop | incoming.tokens(b"connection")
        out = incoming.without(drop)
        keys, lines = out.keys, out.lines
        for key, text in self._set:
            keys.append(key)
            lines.append(text)
        keys.append(b"x-request-id")
        lines.append(b"x-request-id: " + request_id.encode("latin-1"))
        if self._forwarded:
            previous = b", ".join(incoming.raw_all(b"x-forwarded-for"))
            client = (client_ip or "unknown").encode("latin-1")
            value = previous + b", " + client if previous else client
            out.add_line(b"x-forwarded-for", line(b"x-forwarded-for", value))
            out.add_line(b"x-forwarded-proto", b"x-forwarded-proto: http")
        return out


class IdSource:
    """Request ids need to be unique, not secret: a random prefix per process and a
    counter, rather than randomness per request."""

    def __init__(self) -> None:
        self._prefix = os.urandom(8).hex()
        self._count = 0

    def new(self) -> str:
        self._count += 1
        return "%s%016x" % (self._prefix, self._count)  # noqa: UP031 (the cheapest form)


def request_id(incoming: Headers, ids: IdSource) -> str:
    """The app's x-request-id when it is sane, or a new one."""
    given = incoming.raw(b"x-request-id")
    if given is not None and _SANE_ID.fullmatch(given):
        return given.decode("ascii")
    return ids.new()

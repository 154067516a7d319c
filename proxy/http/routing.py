"""Routes compiled once at load; `Router.match()` picks the first route that fits.

Matching uses the normalized path (dot segments resolved, RFC 3986 section 5.2.4), and
that same path is what the upstream receives: `/api/../admin` cannot reach an upstream
path that no route allows. The target host never comes from the request: it is always
one of the upstream's configured endpoints.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

from yarl import URL

from ..config.model import Route

if TYPE_CHECKING:
    from .headers import Headers
    from .hygiene import RequestHeaders
    from .message import Handler

_DOT = frozenset({".", "%2e", "%2E"})
_DOTDOT = frozenset({"..", ".%2e", ".%2E", "%2e.", "%2E.", "%2e%2e", "%2E%2E", "%2e%2E", "%2E%2e"})


def split_target(raw: str) -> tuple[str, str] | None:
    """Request target -> (path, '?query' or ''); absolute-form keeps only path and query."""
    if not raw.startswith("/"):
        if "://" not in raw:
            return None  # authority-form (CONNECT): nothing to forward
        try:
            url = URL(raw)
        except ValueError:
            return None  # llhttp took it, yarl could not read it: not a usable target
        raw = url.raw_path + (f"?{url.raw_query_string}" if url.raw_query_string else "")
    path, sep, query = raw.partition("?")
    return path, sep + query


def normalize_path(path: str) -> str | None:
    """Resolve `.` and `..` segments (also percent-encoded); None if `..` climbs above `/`,
    or if a segment would read as one to a server that decodes more than RFC 3986 asks."""
    if not path.startswith("/"):
        return None
    if "." not in path and "%2" not in path:
        return path  # the common case: nothing to resolve
    resolved = _resolve(path)
    if resolved is None or _hides_dot_segment(resolved):
        return None
    return resolved


def _hides_dot_segment(path: str) -> bool:
    """Would `.` or `..` appear once `%2F` and `%5C` are decoded into separators and
    `;parameters` are dropped? (`/public/..%2Fadmin`, `/public/..;/admin`: a server that
    decodes them climbs out of `/public`.) An encoded slash elsewhere is harmless."""
    if "%2f" not in path.lower() and "%5c" not in path.lower() and ";" not in path:
        return False
    text = path
    for encoded in ("%2f", "%2F", "%5c", "%5C", "\\"):
        text = text.replace(encoded, "/")
    for segment in text.split("/"):
        segment = segment.split(";", 1)[0].lower().replace("%2e", ".")
        if segment in (".", ".."):
            return True
    return False


def _resolve(path: str) -> str | None:
    out: list[str] = []
    segments = path[1:].split("/")
    for i, segment in enumerate(segments):
        last = i == len(segments) - 1
        if segment in _DOT:
            if last:
                out.append("")
        elif segment in _DOTDOT:
            if not out:
                return None
            out.pop()
            if last:
                out.append("")
        else:
            out.append(segment)
    return "/" + "/".join(out)


@dataclass(frozen=True, slots=True)
class CompiledRoute:
    name: str
    upstream: str
    methods: frozenset[str] | None
    path: str | None
    path_prefix: str | None
    host: str | None  # lower case; a leading '*.' matches any subdomain
    headers: tuple[tuple[str, str], ...]
    strip_prefix: str
    prefix: str
    upgrade: frozenset[bytes]  # protocols an Upgrade request may ask for

    @classmethod
    def compile(cls, route: Route) -> CompiledRoute:
        m = route.match
        return cls(
            name=route.name,
            upstream=route.upstream,
            methods=frozenset(m.methods) if m.methods else None,
            path=m.path,
            path_prefix=m.path_prefix,
            host=m.host.lower() if m.host else None,
            headers=tuple(m.headers.items()),
            strip_prefix=route.rewrite.strip_prefix,
            prefix=route.rewrite.prefix,
            upgrade=frozenset(p.encode() for p in route.upgrade),
        )

    def matches(self, method: str, host: str, path: str, headers: Headers) -> bool:
        if self.methods is not None and method not in self.methods:
            return False
        if self.path is not None and path != self.path:
            return False
        if self.path_prefix is not None and not path.startswith(self.path_prefix):
            return False
        if self.host is not None and not _host_matches(self.host, host):
            return False
        return all(headers.get(name) == value for name, value in self.headers)

    def rewrite(self, path: str) -> str:
        if self.strip_prefix and path.startswith(self.strip_prefix):
            path = path[len(self.strip_prefix) :]
            if not path.startswith("/"):
                path = "/" + path
        return self.prefix + path if self.prefix else path


def _host_matches(pattern: str, host: str) -> bool:
    host = host.rsplit(":", 1)[0] if not host.endswith("]") else host
    host = host.lower()
    if pattern.startswith("*."):
        return host.endswith(pattern[1:])
    return host == pattern


class Router:
    """The routes of one listener, in file order."""

    def __init__(self, routes: list[CompiledRoute]) -> None:
        self.routes = routes

    def match(self, method: str, host: str, path: str, headers: Headers) -> CompiledRoute | None:
        for route in self.routes:
            if route.matches(method, host, path, headers):
                return route
        return None


@dataclass(frozen=True, slots=True)
class RouteTarget:
    """What a matched route leads to: its upstream's header rules and its pipeline."""

    upstream: str
    headers: RequestHeaders
    handler: Handler


@dataclass(frozen=True, slots=True)
class Routing:
    """A listener's routes and where they lead. A reload swaps it whole: a request reads
    it once, at its start, and keeps what it read."""

    router: Router
    targets: Mapping[str, RouteTarget]

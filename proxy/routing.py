"""Routes compiled once at load; `Router.match()` picks the first route that fits.

Matching uses the normalized path (dot segments resolved, RFC 3986 section 5.2.4), and
that same path is what the upstream receives: `/api/../admin` cannot reach an upstream
path that no route allows. The target host never comes from the request: it is always
one of the upstream's configured endpoints.
"""

from __future__ import annotations

from dataclasses import dataclass

from multidict import CIMultiDictProxy

from .config import Route

_DOT = frozenset({".", "%2e", "%2E"})
_DOTDOT = frozenset({"..", ".%2e", ".%2E", "%2e.", "%2E.", "%2e%2e", "%2E%2E", "%2e%2E", "%2E%2e"})


def normalize_path(path: str) -> str | None:
    """Resolve `.` and `..` segments (also percent-encoded); None if `..` climbs above `/`."""
    if not path.startswith("/"):
        return None
    if "." not in path and "%2" not in path:
        return path  # the common case: nothing to resolve
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
        )

    def matches(self, method: str, host: str, path: str, headers: CIMultiDictProxy[str]) -> bool:
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

    def match(
        self, method: str, host: str, path: str, headers: CIMultiDictProxy[str]
    ) -> CompiledRoute | None:
        for route in self.routes:
            if route.matches(method, host, path, headers):
                return route
        return None

"""The `listeners:` sections: addresses, connection limits, and routes (what each one
matches, how it rewrites the path, where it sends).
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import AfterValidator, Field, StringConstraints, model_validator

from .queue import Delivery
from .slo import Slo
from .types import Address, HeaderName, HeaderValue, Method, Name, PathText, Section, unit
from .units import Duration, Size


class Limits(Section):
    """Connection hardening against malformed and slow clients (listeners and the control
    port)."""

    max_request_line: Size = unit("8KiB")
    max_header_size: Size = unit("8KiB")
    """Of one header line."""
    max_headers: int = Field(default=100, ge=1, le=1000)
    header_timeout: Duration = unit("10s")
    """A request whose head has not fully arrived this long after its first byte is
    dropped (slowloris)."""
    idle_timeout: Duration = unit("75s")
    """An idle keep-alive connection from the app is closed after this long."""
    body_timeout: Duration = unit("30s")
    """The longest pause between two reads of a request body; past it the attempt is
    aborted and the app gets 408 (if nothing was answered yet). Listeners only."""


class Match(Section):
    """Which requests a route takes; every given condition must hold. First match wins."""

    path_prefix: PathText | None = None
    path: PathText | None = None
    """Exact path, without the query. Give either path or path_prefix."""
    host: str | None = None
    """Host header without its port; `*.example.com` matches any subdomain."""
    methods: tuple[Method, ...] | None = None
    headers: dict[HeaderName, HeaderValue] = Field(default_factory=dict)
    """Header names and their exact values."""

    @model_validator(mode="after")
    def _one_path_kind(self) -> Match:
        if self.path is not None and self.path_prefix is not None:
            raise ValueError("give either path or path_prefix, not both")
        return self


class Rewrite(Section):
    strip_prefix: str = ""
    """Removed from the start of the path when it is there."""
    prefix: str = ""
    """Then put in front of the path."""


class Route(Section):
    name: Name
    """Unique across listeners; the `route` label of metrics."""
    match: Match = Match()
    upstream: Name
    rewrite: Rewrite = Rewrite()
    policy: Name | None = None
    """A name under `policies`; without one: default timeouts, no retry."""
    shed_at: Literal["degraded", "limited", "emergency"] | None = None
    """At this degradation level or worse, requests go straight to the fallback (or get
    503 `shed`) without calling the upstream."""
    upgrade: tuple[Protocol, ...] = ()
    """Protocols an `Upgrade` request may switch to (`websocket`): after the upstream's
    101 the connection is a tunnel. Other Upgrade requests get 501 upgrade_unsupported."""
    slo: Slo | None = None
    """Service level objectives of the route (availability, latency), counted by Fender
    and judged by the rules `fender slo rules` prints."""
    delivery: Delivery | None = None
    """`{queue: NAME}`: requests are kept in that queue and answered 202 at once, then
    delivered with this route's policies until they succeed or become dead letters."""


Protocol = Annotated[
    str, StringConstraints(pattern=r"^[A-Za-z0-9!#$%&'*+.^_`|~-]+$"), AfterValidator(str.lower)
]


class Listener(Section):
    name: Name
    address: Address
    routes: tuple[Route, ...] = Field(min_length=1)
    limits: Limits = Limits()

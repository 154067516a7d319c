"""The shape every policy shares: a Call goes in, a Reply comes out.

A policy is `async def __call__(call, call_next) -> Reply`. `compose()` stacks policies
around the terminal handler (the upstream's `send`); the first policy given is the
outermost. Which policies, in which order, is decided in `policies/__init__.py` only.

Failures travel as exceptions of two families (STYLE.md rule 6): `Rejected` (answered
locally, the upstream was not called) and `UpstreamFailed` (called, and it failed). The
`reason` of either is the same word in the metric label, the header and the log line.
"""

from __future__ import annotations

from collections.abc import AsyncIterable, Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import Protocol

from multidict import CIMultiDict, CIMultiDictProxy

Body = bytes | AsyncIterable[bytes]


INF = float("inf")


@dataclass(slots=True)
class Call:
    """One request on its way to an upstream; per-call state, made per request."""

    method: str
    target: str  # path and query as the upstream will see them (after rewrite)
    headers: CIMultiDict[str]  # already cleaned for the upstream
    body: Body | None  # None: no body; bytes: buffered, so attempts can replay it
    route: str
    request_id: str
    started: float  # clock.monotonic() at arrival
    attempts: int = 0  # upstream attempts made so far, the first included
    # Set by the Deadline policy (monotonic times; INF: no limit).
    deadline: float = INF  # response headers must arrive by then
    stream_deadline: float = INF  # the whole answer must be sent by then
    idle: float | None = None  # longest gap between two response body chunks
    per_try: float | None = None  # one attempt, until its response headers
    connect: float | None = None  # connecting to an endpoint
    last_endpoint: str | None = None  # a retry prefers another endpoint
    replayable: bool | None = None  # can the body be sent again? None: not decided yet
    sent_at: float = 0.0  # when the current attempt left for the upstream
    # The current attempt holds a half-open probe permit: it must not wait in a bulkhead
    # queue, a cool-down or for a token (it is rejected locally instead).
    probe: bool = False
    # What the app sent, for policies that key on it or send to another upstream.
    incoming: CIMultiDictProxy[str] | None = None
    client_ip: str | None = None


@dataclass(slots=True)
class Reply:
    """What goes back to the app: status and headers first, then a body that may stream."""

    status: int
    headers: CIMultiDict[str]
    body: Body = b""
    reason: str = ""  # the status line's reason phrase; empty for the standard one
    content_length: int | None = None  # None: unknown, the body is sent chunked
    outcome: str = "ok"
    fender_reason: str = ""  # x-fender-reason, when a policy shaped this reply
    close_connection: bool = False  # after a malformed request, do not trust the stream
    release: Callable[[], None] = field(default=lambda: None)


Handler = Callable[[Call], Awaitable[Reply]]


class Policy(Protocol):
    async def __call__(self, call: Call, call_next: Handler) -> Reply: ...


def compose(policies: Sequence[Policy], terminal: Handler) -> Handler:
    """Wrap `terminal` in `policies`, the first one outermost. Built once per route.

    `partial` binds each policy to the next handler without a coroutine of its own: a
    layer costs one call, not two.
    """
    handler = terminal
    for policy in reversed(policies):
        handler = partial(policy, call_next=handler)
    return handler


class FenderError(Exception):
    """A request Fender answers itself; `reason` is the x-fender-reason word."""

    status = 502
    outcome = "failed"

    def __init__(self, reason: str, detail: str = "", *, status: int | None = None) -> None:
        super().__init__(detail or reason)
        self.reason = reason
        self.detail = detail or reason
        if status is not None:
            self.status = status


class Rejected(FenderError):
    """Answered locally: the upstream was not called (no route, limits, open circuit)."""

    status = 503
    outcome = "rejected"

    def __init__(
        self,
        reason: str,
        detail: str = "",
        *,
        status: int | None = None,
        retry_after: float | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(reason, detail, status=status)
        self.retry_after = retry_after
        self.headers = headers or {}


class UpstreamFailed(FenderError):
    """The upstream was called and failed before a response could be relayed."""

    status = 502

"""The shape every policy shares: a Call goes in, a Reply comes out.

A policy is `async def __call__(call, call_next) -> Reply`. `compose()` stacks policies
around the terminal handler (the upstream's `send`); the first policy given is the
outermost. Which policies, in which order, is decided in `policies/__init__.py` only.

Failures travel as exceptions of two families (STYLE.md rule 6): `Rejected` (answered
locally, the upstream was not called) and `UpstreamFailed` (called, and it failed). The
`reason` of either is the same word in the metric label, the header and the log line.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from functools import partial
from typing import Any, Protocol

from .headers import Headers
from .stream import BodyStream

# A body: whole (bytes), or streaming through (read by one connection, written by another).
Body = bytes | BodyStream


INF = float("inf")


def _nothing() -> None:
    pass


class Call:
    """One request on its way to an upstream; per-call state, made per request.

    A plain class: its rarely changed fields are class-level defaults, so making one per
    request sets only what the request brings.
    """

    # Set by the Deadline policy (monotonic times; INF: no limit).
    deadline: float = INF  # response headers must arrive by then
    stream_deadline: float = INF  # the whole answer must be sent by then
    idle: float | None = None  # longest gap between two response body chunks
    per_try: float | None = None  # one attempt, until its response headers
    connect: float | None = None  # connecting to an endpoint
    attempts: int = 0  # upstream attempts made so far, the first included
    last_endpoint: str | None = None  # a retry prefers another endpoint
    replayable: bool | None = None  # can the body be sent again? None: not decided yet
    sent_at: float = 0.0  # when the current attempt left for the upstream
    retry_owned: bool = False  # a Retry policy decided the attempts: apps must not add more
    # The current attempt holds a half-open probe permit: it must not wait in a bulkhead
    # queue, a cool-down or for a token (it is rejected locally instead).
    probe: bool = False

    def __init__(
        self,
        method: str,
        target: str,
        headers: Headers,
        body: Body | None,
        route: str,
        request_id: str,
        started: float,
        *,
        incoming: Headers | None = None,
        client_ip: str | None = None,
        upgrade: bytes | None = None,
        deadline: float = INF,
    ) -> None:
        self.method = method
        self.target = target  # path and query as the upstream will see them (after rewrite)
        self.headers = headers  # already cleaned for the upstream
        self.body = body  # None: no body; bytes: whole, so attempts can replay it
        self.route = route
        self.request_id = request_id
        self.started = started  # clock.monotonic() at arrival
        # What the app sent, for policies that key on it or send to another upstream.
        self.incoming = incoming
        self.client_ip = client_ip
        self.upgrade = upgrade  # the protocol of an Upgrade request (b"websocket")
        if deadline != INF:
            self.deadline = deadline


class Reply:
    """What goes back to the app: status and headers first, then a body that may stream."""

    reason: bytes = b""  # the status line's reason phrase; empty for the standard one
    content_length: int | None = None  # None: unknown, the body is sent chunked
    fender_reason: str = ""  # x-fender-reason, when a policy shaped this reply
    close_connection: bool = False  # after a malformed request, do not trust the stream
    release: Callable[[], None] = staticmethod(_nothing)
    tunnel: Any = None  # after a 101: the upstream connection, handed over whole

    def __init__(
        self,
        status: int,
        headers: Headers,
        body: Body = b"",
        *,
        outcome: str = "ok",
        fender_reason: str = "",
        close_connection: bool = False,
    ) -> None:
        self.status = status
        self.headers = headers
        self.body = body
        self.outcome = outcome
        if fender_reason:
            self.fender_reason = fender_reason
        if close_connection:
            self.close_connection = True


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

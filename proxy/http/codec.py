"""The bytes of message heads: requests to upstreams, answers to the app.

A head is built in one pass and written in one call. Fender frames every body itself:
`Content-Length` with the length it framed the body by, or chunked encoding when the
length is not known in advance (and the app speaks HTTP/1.1).
"""

from __future__ import annotations

import math
from http import HTTPStatus

import orjson

from .headers import Headers, line
from .message import Call, FenderError, Rejected, Reply

_REASONS = {s.value: s.phrase.encode("latin-1") for s in HTTPStatus}
_STATUS_LINES: dict[tuple[int, bytes], bytes] = {}
CHUNKED = b"transfer-encoding: chunked\r\n"
CLOSE = b"connection: close\r\n"
LAST_CHUNK = b"0\r\n\r\n"
# Methods whose empty body is still stated, so that servers that demand a length (411)
# accept them.
_LENGTH_REQUIRED = frozenset({"POST", "PUT", "PATCH"})


def status_line(status: int, reason: bytes = b"") -> bytes:
    key = (status, reason)
    cached = _STATUS_LINES.get(key)
    if cached is None:
        phrase = reason or _REASONS.get(status, b"")
        cached = b"HTTP/1.1 %d %s\r\n" % (status, phrase)
        if len(_STATUS_LINES) < 256:
            _STATUS_LINES[key] = cached
    return cached


def request_framing(call: Call) -> tuple[bytes, bool]:
    """The framing header of a request to an upstream, and whether its body is chunked."""
    body = call.body
    if body is None:
        return (b"content-length: 0\r\n" if call.method in _LENGTH_REQUIRED else b""), False
    if isinstance(body, bytes):
        return b"content-length: %d\r\n" % len(body), False
    if body.length is not None:
        return b"content-length: %d\r\n" % body.length, False
    return CHUNKED, True


def request_head(call: Call, host: bytes, prefix: bytes, extra: bytes = b"") -> tuple[bytes, bool]:
    """Request line and headers for one attempt; True when the body goes chunked."""
    if call.body is None and call.method not in _LENGTH_REQUIRED:
        framing, chunked = b"", False  # the common case, without a call
    else:
        framing, chunked = request_framing(call)
    # One join, no format string to parse: `host` is the endpoint's, ready as bytes.
    head = b"".join(
        (
            call.method.encode("ascii"),
            b" ",
            prefix,
            call.target.encode("latin-1"),
            b" HTTP/1.1\r\nhost: ",
            host,
            b"\r\n",
            call.headers.encoded(),
            framing,
            extra,
            b"\r\n",
        )
    )
    return head, chunked


def fender_lines(reply: Reply, attempts: int, retry_owned: bool) -> bytes:
    """What Fender says about an answer: outcome, attempts, reason, and whether an app's
    client library should retry it on its own.

    `x-should-retry: false` (the header the OpenAI and Anthropic SDKs honour) stops retry
    multiplication: after Fender's own retries, on a fallback and on a local rejection,
    another try from the app's SDK only adds load. The exception is a local 429 with a
    Retry-After: there, trying again later is the right thing.
    """
    outcome = reply.outcome
    settled = outcome == "fallback" or outcome == "rejected" or (retry_owned and outcome != "ok")
    if settled and outcome == "rejected" and reply.status == 429:
        settled = False  # Fender's own rate limit, with its Retry-After: wait, then retry
    key = (outcome, attempts, reply.fender_reason, settled)
    lines = _FENDER_LINES.get(key)
    if lines is None:
        lines = b"x-fender-outcome: %s\r\nx-fender-attempts: %d\r\n" % (outcome.encode(), attempts)
        if reply.fender_reason:
            lines += b"x-fender-reason: " + reply.fender_reason.encode() + b"\r\n"
        if settled:
            lines += b"x-should-retry: false\r\n"
        if len(_FENDER_LINES) < 1024:  # a few words times a few attempt counts
            _FENDER_LINES[key] = lines
    return lines


_FENDER_LINES: dict[tuple[str, int, str, bool], bytes] = {}


def response_head(reply: Reply, framing: bytes, attempts: int, retry_owned: bool) -> bytes:
    status = status_line(reply.status, reply.reason)
    fender = fender_lines(reply, attempts, retry_owned)
    return b"".join((status, reply.headers.encoded(), fender, framing, b"\r\n"))


def error_reply(err: FenderError, rid: str) -> Reply:
    """Fender's own answer for a request it could not forward: small JSON, says why."""
    headers = Headers()
    headers.add_line(b"content-type", b"content-type: application/json")
    headers.add_line(b"server", b"server: fender")
    if isinstance(err, Rejected):
        headers.update(err.headers)
        if err.retry_after is not None:  # whole seconds, 1 s to a day
            seconds = max(1, math.ceil(min(err.retry_after, 86_400.0)))
            headers.add_line(b"retry-after", line(b"retry-after", b"%d" % seconds))
    body = orjson.dumps({"error": err.reason, "detail": err.detail, "request_id": rid})
    return Reply(
        status=err.status,
        headers=headers,
        body=body,
        outcome=err.outcome,
        fender_reason=err.reason,
        close_connection=err.status == 400,
    )


def chunk(data: bytes) -> bytes:
    return b"%x\r\n%s\r\n" % (len(data), data)

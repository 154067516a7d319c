"""Request bodies that can be sent more than once.

A body up to the limit is read into memory so that a retry or a failover can replay it;
a larger one streams through once (its first chunks, already read, then the rest). A
body that had arrived whole with its head is bytes already: nothing to wait for.
"""

from __future__ import annotations

from ..http.message import Call, Rejected


async def make_replayable(call: Call, limit: int) -> bool:
    """Buffer the call's body if it fits in `limit`; True when it can be sent again."""
    if call.replayable is not None:
        return call.replayable
    body = call.body
    if body is None or isinstance(body, bytes):
        call.replayable = body is None or len(body) <= limit
        return call.replayable
    if body.length is not None and body.length > limit:
        call.replayable = False
        return False
    whole = await body.read(limit)
    if body.failed == "body_timeout":
        detail = "the app sent no request body for longer than body_timeout"
        raise Rejected("body_timeout", detail, status=408)
    if whole is None:
        call.replayable = False
        return False
    call.body = whole
    call.replayable = True
    return True

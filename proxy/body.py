"""Request bodies that can be sent more than once.

A body up to the limit is read into memory so that a retry or a failover can replay it;
a larger one streams through once (its first chunks, already read, then the rest).
"""

from __future__ import annotations

from collections.abc import AsyncIterable, AsyncIterator

from .pipeline import Call


async def make_replayable(call: Call, limit: int) -> bool:
    """Buffer the call's body if it fits in `limit`; True when it can be sent again."""
    if call.replayable is not None:
        return call.replayable
    body = call.body
    if body is None or isinstance(body, bytes):
        call.replayable = True
        return True
    length = call.headers.get("content-length")
    if length is not None and length.isdigit() and int(length) > limit:
        call.replayable = False
        return False
    chunks: list[bytes] = []
    size = 0
    iterator = aiter(body)
    async for chunk in iterator:
        chunks.append(chunk)
        size += len(chunk)
        if size > limit:
            call.body = _chain(chunks, iterator)
            call.replayable = False
            return False
    call.body = b"".join(chunks)
    call.replayable = True
    return True


async def _chain(head: list[bytes], rest: AsyncIterable[bytes]) -> AsyncIterator[bytes]:
    for chunk in head:
        yield chunk
    async for chunk in rest:
        yield chunk

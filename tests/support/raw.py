"""A raw-socket HTTP client, for requests no well-behaved client library would send."""

from __future__ import annotations

import asyncio


async def exchange(port: int, data: bytes | list[bytes], *, timeout: float = 5.0) -> bytes:
    """Send `data` (or its parts, one write each), then read until the server closes."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        for part in [data] if isinstance(data, bytes) else data:
            writer.write(part)
            await writer.drain()
        return await asyncio.wait_for(reader.read(), timeout)
    finally:
        writer.close()


def status_of(response: bytes) -> int:
    """The status code of the first response in `response` (0 if there is none)."""
    if not response.startswith(b"HTTP/1."):
        return 0
    return int(response.split(b" ", 2)[1])

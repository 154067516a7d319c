"""Raw sockets: a client for requests, and a server for answers, that no well-behaved HTTP
library would send."""

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


class RawUpstream:
    """A raw TCP server on 127.0.0.1 that answers every request head with fixed bytes,
    for answers no HTTP server library would send. Counts the connections it took."""

    def __init__(self, answer: bytes) -> None:
        self.answer = answer
        self.connections = 0
        self._server: asyncio.Server | None = None

    async def __aenter__(self) -> RawUpstream:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.close()

    @property
    def url(self) -> str:
        assert self._server is not None
        return f"http://127.0.0.1:{self._server.sockets[0].getsockname()[1]}"

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            await reader.readuntil(b"\r\n\r\n")
            writer.write(self.answer)
            await writer.drain()
            await reader.read()  # until the client gives up on the connection
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

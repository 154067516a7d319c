"""A message body on its way through: read by one connection, written by another.

The reading connection feeds chunks in as they arrive; the consumer is a `Sink` that gets
them at once, in the same callback, so a relayed chunk costs no task switch and an SSE
event leaves as soon as it came. Backpressure runs both ways: a sink that cannot keep up
calls `pause()`, which stops the reading connection (`pause_reading`), and `resume()`.
Until a sink is attached, chunks wait here, and past `HIGH_WATER` the reader is paused.

`read(limit)` collects a whole body for policies that need to keep it (replay for
retries, the delivery queue); a body over the limit stays here, already-read part
included, for the sink that will stream it once. Observers (`observe()`) see every chunk
without holding anything up: the stale cache copies an answer that way.
"""

from __future__ import annotations

import asyncio
from typing import Protocol

HIGH_WATER = 256 * 1024


class Sink(Protocol):
    def chunk(self, data: bytes) -> None: ...

    def end(self) -> None: ...

    def fail(self, reason: str) -> None:
        """The body cannot be completed: `reason` is timeout, reset, client_closed, ..."""
        ...


class Source(Protocol):
    """The connection a body is read from."""

    def pause_body(self) -> None: ...

    def resume_body(self) -> None: ...

    def abandon_body(self) -> None:
        """Nobody will read the rest: the connection cannot be reused."""
        ...


class BodyStream:
    __slots__ = (
        "_buffered",
        "_chunks",
        "_full",
        "_held",
        "_observers",
        "_paused",
        "_reader",
        "_sink",
        "failed",
        "finished",
        "length",
        "size",
        "source",
    )

    def __init__(self, source: Source, length: int | None = None) -> None:
        self.source = source
        self.length = length  # as declared by Content-Length; None: chunked or unknown
        self._sink: Sink | None = None
        self._chunks: list[bytes] = []
        self._buffered = 0
        self._observers: list[Sink] = []
        # The source is paused while either holds: too much waits here for a sink
        # (`_full`), or the sink asked (`_held`). Each is released by its own owner.
        self._full = False
        self._held = False
        self._paused = False
        self._reader: tuple[asyncio.Future[None], int] | None = None
        self.size = 0  # bytes fed so far
        self.finished = False
        self.failed: str | None = None

    # The reading connection's side.
    def feed(self, data: bytes) -> None:
        self.size += len(data)
        for observer in self._observers:
            observer.chunk(data)
        sink = self._sink
        if sink is not None:
            sink.chunk(data)
            return
        self._chunks.append(data)
        self._buffered += len(data)
        reader = self._reader
        if reader is not None:  # read() bounds the buffer by its own limit
            if self._buffered > reader[1]:
                self._wake_reader()
        elif self._buffered > HIGH_WATER and not self._full:
            self._full = True
            self._sync()

    def _sync(self) -> None:
        """Pause or resume the source to match what holds it."""
        paused = self._full or self._held
        if paused != self._paused:
            self._paused = paused
            if paused:
                self.source.pause_body()
            else:
                self.source.resume_body()

    def _release(self) -> None:
        """The body ended: nothing holds its source any more."""
        self._full = self._held = False
        self._sync()

    def finish(self) -> None:
        self.finished = True
        self._release()
        for observer in self._observers:
            observer.end()
        if self._sink is not None:
            self._sink.end()
        else:
            self._wake_reader()

    def abort(self, reason: str) -> None:
        if self.finished or self.failed:
            return
        self.failed = reason
        self._release()
        for observer in self._observers:
            observer.fail(reason)
        if self._sink is not None:
            self._sink.fail(reason)
        else:
            self._wake_reader()

    # The consumer's side.
    def pipe(self, sink: Sink) -> None:
        """Send everything, what already arrived first, to `sink`."""
        chunks, self._chunks, self._buffered = self._chunks, [], 0
        self._sink = sink
        for chunk in chunks:
            sink.chunk(chunk)  # may hold the source (pause()): that stays
        if self.finished:
            sink.end()
        elif self.failed:
            sink.fail(self.failed)
        elif self._full:
            self._full = False  # what waited went to the sink
            self._sync()

    def observe(self, observer: Sink) -> None:
        """See every chunk from now on (chunks already waiting here are passed first)."""
        for chunk in self._chunks:
            observer.chunk(chunk)
        if self.finished:
            observer.end()
        elif self.failed:
            observer.fail(self.failed)
        else:
            self._observers.append(observer)

    def pause(self) -> None:
        """The sink cannot take more for now."""
        if not self._held and not self.finished and not self.failed:
            self._held = True
            self._sync()

    def resume(self) -> None:
        if self._held:
            self._held = False
            self._sync()

    def discard(self) -> None:
        """The consumer wants none of it."""
        self._chunks, self._buffered, self._sink = [], 0, None
        if not self.finished:
            self.failed = self.failed or "discarded"
            self.source.abandon_body()

    @property
    def complete(self) -> bool:
        """Has the whole body arrived, still unread?"""
        return self.finished and self._sink is None

    def joined(self) -> bytes:
        """What arrived and waits here, as one string."""
        data = b"".join(self._chunks) if len(self._chunks) != 1 else self._chunks[0]
        self._chunks, self._buffered = [data] if data else [], len(data)
        return data

    async def read(self, limit: int) -> bytes | None:
        """The whole body if it is at most `limit` bytes; None when it is larger (it then
        stays here to be streamed) or when it broke off (`failed` says why)."""
        while not self.finished and not self.failed and self._buffered <= limit:
            waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            self._reader = (waiter, limit)
            if self._full:  # read() bounds the buffer by its own limit instead
                self._full = False
                self._sync()
            try:
                await waiter
            finally:
                self._reader = None
        if self.failed or self._buffered > limit:
            return None
        return self.joined()

    def _wake_reader(self) -> None:
        reader = self._reader
        if reader is not None and not reader[0].done():
            reader[0].set_result(None)

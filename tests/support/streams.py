"""Body streams for unit tests: fed by the test instead of a connection."""

from __future__ import annotations

from proxy.http.stream import BodyStream


class FakeSource:
    """Stands where a connection would: records what the stream asked of it."""

    def __init__(self) -> None:
        self.paused = False
        self.abandoned = False

    def pause_body(self) -> None:
        self.paused = True

    def resume_body(self) -> None:
        self.paused = False

    def abandon_body(self) -> None:
        self.abandoned = True


def stream_of(*chunks: bytes, finished: bool = True) -> BodyStream:
    stream = BodyStream(FakeSource())
    for chunk in chunks:
        stream.feed(chunk)
    if finished:
        stream.finish()
    return stream


class Collect:
    """A sink that keeps what it is given."""

    def __init__(self) -> None:
        self.chunks: list[bytes] = []
        self.ended = False
        self.failed: str | None = None

    def chunk(self, data: bytes) -> None:
        self.chunks.append(data)

    def end(self) -> None:
        self.ended = True

    def fail(self, reason: str) -> None:
        self.failed = reason

    @property
    def body(self) -> bytes:
        return b"".join(self.chunks)

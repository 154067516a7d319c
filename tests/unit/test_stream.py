"""Body streams: what arrives before a sink waits, backpressure both ways, bounded reads."""

from __future__ import annotations

import asyncio

from proxy.http.stream import HIGH_WATER, BodyStream
from tests.support.streams import Collect, FakeSource


def test_chunks_before_the_sink_are_passed_first_then_live_ones():
    source = FakeSource()
    stream = BodyStream(source)
    stream.feed(b"a")
    sink = Collect()
    stream.pipe(sink)
    stream.feed(b"b")
    stream.finish()
    assert (sink.chunks, sink.ended) == ([b"a", b"b"], True)


def test_waiting_past_high_water_pauses_the_source_until_a_sink_comes():
    source = FakeSource()
    stream = BodyStream(source)
    stream.feed(b"x" * (HIGH_WATER + 1))
    assert source.paused
    stream.pipe(Collect())
    assert not source.paused


def test_a_slow_sink_pauses_the_source_and_resumes_it():
    source = FakeSource()
    stream = BodyStream(source)
    stream.pipe(Collect())
    stream.pause()
    assert source.paused
    stream.resume()
    assert not source.paused


def test_a_failure_reaches_the_sink_and_observers_with_its_reason():
    stream = BodyStream(FakeSource())
    sink, observer = Collect(), Collect()
    stream.observe(observer)
    stream.pipe(sink)
    stream.feed(b"half")
    stream.abort("reset")
    assert (sink.failed, observer.failed, observer.chunks) == ("reset", "reset", [b"half"])


def test_discarding_an_unfinished_body_abandons_its_connection():
    source = FakeSource()
    stream = BodyStream(source)
    stream.feed(b"part")
    stream.discard()
    assert source.abandoned


async def test_read_returns_the_whole_body_within_the_limit():
    stream = BodyStream(FakeSource())
    reading = asyncio.ensure_future(stream.read(10))
    await asyncio.sleep(0)
    stream.feed(b"0123")
    stream.feed(b"4567")
    stream.finish()
    assert await reading == b"01234567"


async def test_read_over_the_limit_leaves_everything_for_the_sink():
    stream = BodyStream(FakeSource())
    reading = asyncio.ensure_future(stream.read(4))
    await asyncio.sleep(0)
    stream.feed(b"0123")
    stream.feed(b"4567")
    assert await reading is None
    sink = Collect()
    stream.pipe(sink)
    stream.feed(b"89")
    stream.finish()
    assert (sink.body, sink.ended) == (b"0123456789", True)


async def test_a_read_of_a_body_that_broke_off_says_why():
    stream = BodyStream(FakeSource())
    reading = asyncio.ensure_future(stream.read(100))
    await asyncio.sleep(0)
    stream.abort("body_timeout")
    assert await reading is None and stream.failed == "body_timeout"


def test_a_sink_that_fills_while_flushing_keeps_the_source_paused():
    # What waited past HIGH_WATER goes to the sink; if that fills the sink, the source
    # must stay paused until the sink itself resumes it.
    source = FakeSource()
    stream = BodyStream(source)
    stream.feed(b"x" * (HIGH_WATER + 1))

    class Filling(Collect):
        def chunk(self, data: bytes) -> None:
            super().chunk(data)
            stream.pause()

    stream.pipe(Filling())
    assert source.paused
    stream.resume()
    assert not source.paused


def test_an_ended_body_releases_whatever_paused_its_source():
    for end in ("finish", "abort"):
        source = FakeSource()
        stream = BodyStream(source)
        stream.pipe(Collect())
        stream.pause()
        getattr(stream, end)(*(() if end == "finish" else ("reset",)))
        assert not source.paused, end

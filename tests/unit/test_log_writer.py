"""The log's writer: lines keep their order, a full buffer drops and counts, flush()
writes what is pending. The writer is a real thread; the tests wait on its progress,
never on the clock."""

from __future__ import annotations

import io
import threading

import orjson

from proxy.observe.log_writer import LineWriter
from proxy.observe.logs import JsonLog


def test_events_access_and_audit_lines_keep_their_order():
    out = io.BytesIO()
    log = JsonLog(out)
    log.access(n=1)
    log.event("started")
    log.access(n=2)
    log.raw(b'{"event":"audit"}\n')
    log.access(n=3)
    assert log.flush()
    lines = [orjson.loads(line) for line in out.getvalue().splitlines()]
    assert [(x["event"], x.get("n")) for x in lines] == [
        ("request", 1),
        ("started", None),
        ("request", 2),
        ("audit", None),
        ("request", 3),
    ]


class StuckWrite:
    """A write that does not return until released, as to a pipe nobody reads."""

    def __init__(self) -> None:
        self.entered = threading.Event()
        self.release = threading.Event()
        self.data = b""

    def __call__(self, data: bytes) -> None:
        self.entered.set()
        assert self.release.wait(10)
        self.data += data


def test_a_full_buffer_drops_lines_and_counts_them():
    write, reported = StuckWrite(), []
    writer = LineWriter(write, max_bytes=100, on_drop=reported.append)
    writer.put(b"first\n", urgent=True)
    assert write.entered.wait(10)  # the writer is stuck with it
    for i in range(10):
        writer.put(b"%02d" % i + b"x" * 27 + b"\n")  # 30 bytes: three fit in 100
    assert (writer.dropped, sum(reported)) == (7, 7)
    write.release.set()
    assert writer.flush()
    assert write.data.splitlines() == [b"first"] + [b"%02d" % i + b"x" * 27 for i in range(3)]


def test_drops_before_the_reporter_was_given_are_reported_too():
    write = StuckWrite()
    log = JsonLog(buffer=10)
    log._writer.write = write
    log.event("a line longer than the buffer")
    reported: list[int] = []
    log.report_drops(reported.append)
    log.event("another")
    assert reported == [1, 1]
    write.release.set()


def test_flush_writes_everything_pending():
    out = io.BytesIO()
    log = JsonLog(out)
    for i in range(1000):
        log.access(n=i)
    assert log.flush()
    assert len(out.getvalue().splitlines()) == 1000

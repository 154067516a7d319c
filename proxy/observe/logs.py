"""JSON lines on stdout: one per request (access) and one per event of Fender's own.

Lines are written by a thread of their own from a bounded buffer (log_writer.py), so a
stuck stdout never blocks the event loop; when the buffer is full, lines are dropped and
counted. Access lines share a write a few times a second; events are written at once.
No line ever holds a header value, so credentials cannot leak through the log.
"""

from __future__ import annotations

import datetime
import io
import logging
import sys
import time
from collections.abc import Callable, Mapping
from typing import IO, Any

import orjson

from .log_writer import DropReporter, LineWriter, Write, fd_writer

_UTC = datetime.UTC
Tap = Callable[[str, str, Mapping[str, Any]], None]  # (event, level, fields)
LEVELS = {"debug": 10, "info": 20, "warning": 30, "error": 40}
DEFAULT_BUFFER = 4 << 20  # bytes of lines waiting to be written (`log.buffer`)
# One request's line, made without a dict and without formatting its constant parts:
# every value is a config name, a word of Fender's, a method llhttp knows or a request
# id of a safe alphabet (hygiene.py), so none needs escaping.
_TAIL_LIMIT = 4096  # distinct (status, outcome, reason, attempts) tails kept ready


class JsonLog:
    def __init__(self, stream: IO[bytes] | None = None, *, buffer: int = DEFAULT_BUFFER) -> None:
        self._writer = LineWriter(_writer_of(stream), buffer)
        self.level = "info"  # lines below it are dropped (access lines are info)
        self._threshold = LEVELS["info"]
        self._second = -1  # the second `_stamp` holds the text of
        self._stamp = ""
        self._middles: dict[tuple[str, str, str, str], str] = {}
        self._tails: dict[tuple[int, str, str, int], str] = {}
        self._tap: Tap | None = None

    def tap(self, tap: Tap | None) -> None:
        """Also hand every event (not request lines), whatever the level, to `tap`: the
        ring of recent events the status page shows (observe/events.py)."""
        self._tap = tap

    def set_buffer(self, size: int) -> None:
        """How many bytes of lines may wait for the writer; beyond, lines are dropped."""
        self._writer.max_bytes = size

    def report_drops(self, on_drop: DropReporter) -> None:
        """Tell `on_drop` of every line dropped from now on, and of those dropped so far."""
        self._writer.on_drop = on_drop
        if self._writer.dropped:
            on_drop(self._writer.dropped)

    def set_level(self, level: str) -> None:
        self._threshold = LEVELS[level]
        self.level = level

    def event(self, event: str, level: str = "info", **fields: Any) -> None:
        """Fender's own events: start, stop, errors. The writer is woken at once."""
        if self._tap is not None:
            self._tap(event, level, fields)
        if LEVELS.get(level, 40) < self._threshold:
            return
        self._writer.put(self._line({"level": level, "event": event, **fields}), urgent=True)

    def access(self, **fields: Any) -> None:
        """One request; written within log_writer.FLUSH_INTERVAL."""
        if self._threshold > LEVELS["info"]:
            return
        self._writer.put(self._line({"level": "info", "event": "request", **fields}))

    def request(
        self,
        request_id: str,
        listener: str,
        route: str,
        upstream: str,
        method: str,
        status: int,
        seconds: float,
        outcome: str,
        reason: str,
        attempts: int,
    ) -> None:
        """One request's line, the same as access() would make, made cheaply."""
        if self._threshold > 20:
            return
        now = time.time()
        second = int(now)
        if second != self._second:
            self._second = second
            self._stamp = '{"time":"' + time.strftime("%Y-%m-%dT%H:%M:%S.", time.gmtime(second))
        middle = self._middles.get((listener, route, upstream, method))
        if middle is None:
            middle = self._middle(listener, route, upstream, method)
        tail = self._tails.get((status, outcome, reason, attempts))
        if tail is None:
            tail = self._tail(status, outcome, reason, attempts)
        micros = int((now - second) * 1e6)
        line = "".join(
            (
                self._stamp,
                str(1000000 + micros)[1:],
                '+00:00","level":"info","event":"request","request_id":"',
                request_id,
                middle,
                str(round(seconds * 1000, 3)),
                tail,
            )
        )
        self._writer.put(line.encode())

    def _middle(self, listener: str, route: str, upstream: str, method: str) -> str:
        key = (listener, route, upstream, method)
        middle = f'","listener":"{listener}","route":"{route}","upstream":"{upstream}",'
        middle += f'"method":"{method}","duration_ms":'
        if len(self._middles) < _TAIL_LIMIT:
            self._middles[key] = middle
        return middle

    def _tail(self, status: int, outcome: str, reason: str, attempts: int) -> str:
        key = (status, outcome, reason, attempts)
        tail = f',"status":{status},"outcome":"{outcome}","reason":"{reason}",'
        tail += f'"attempts":{attempts}}}\n'
        if len(self._tails) < _TAIL_LIMIT:
            self._tails[key] = tail
        return tail

    def raw(self, line: bytes) -> None:
        """A line made elsewhere (the audit log's), written at once."""
        self._writer.put(line, urgent=True)

    def flush(self) -> bool:
        """Wait (a bounded while) until every line so far is written; at shutdown, and
        for tests that read the log. True when it was."""
        return self._writer.flush()

    def capture_std_logging(self) -> None:
        """Route the warnings of libraries (aiohttp, asyncio) into this log as JSON lines."""
        log = self

        class Handler(logging.Handler):
            def emit(self, record: logging.LogRecord) -> None:
                fields: dict[str, Any] = {"logger": record.name, "message": record.getMessage()}
                if record.exc_info and record.exc_info[0] is not None:
                    fields["error"] = record.exc_info[0].__name__
                log.event("library", record.levelname.lower(), **fields)

        root = logging.getLogger()
        root.handlers = [Handler(level=logging.WARNING)]
        root.setLevel(logging.WARNING)

    @staticmethod
    def _line(fields: dict[str, Any]) -> bytes:
        fields = {"time": datetime.datetime.now(_UTC), **fields}
        return orjson.dumps(fields, default=str) + b"\n"


def _writer_of(stream: IO[bytes] | None) -> Write:
    """stdout by its file descriptor (unbuffered), or any other stream as given."""
    if stream is None:
        try:
            return fd_writer(sys.stdout.fileno())
        except (AttributeError, ValueError, io.UnsupportedOperation):
            stream = sys.stdout.buffer  # stdout replaced by something without a descriptor
    given = stream

    def write(data: bytes) -> None:
        given.write(data)
        given.flush()

    return write

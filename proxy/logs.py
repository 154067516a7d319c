"""JSON lines on stdout: one per request (access) and one per event of Fender's own.

Access lines go through a buffer that is flushed a few times a second, so a busy proxy
does not pay a write system call per request; events are flushed at once. No line ever
holds a header value, so credentials cannot leak through the log.
"""

from __future__ import annotations

import asyncio
import datetime
import logging
import sys
from typing import IO, Any

import orjson

_UTC = datetime.UTC
FLUSH_INTERVAL = 0.25
LEVELS = {"debug": 10, "info": 20, "warning": 30, "error": 40}


class JsonLog:
    def __init__(self, stream: IO[bytes] | None = None) -> None:
        self._stream = stream if stream is not None else sys.stdout.buffer
        self._pending: list[bytes] = []
        self._flusher: asyncio.TimerHandle | None = None
        self.level = "info"  # lines below it are dropped (access lines are info)
        self._threshold = LEVELS["info"]

    def set_level(self, level: str) -> None:
        self._threshold = LEVELS[level]
        self.level = level

    def event(self, event: str, level: str = "info", **fields: Any) -> None:
        """Fender's own events: start, stop, errors. Written and flushed at once."""
        if LEVELS.get(level, 40) < self._threshold:
            return
        self._pending.append(self._line({"level": level, "event": event, **fields}))
        self.flush()

    def access(self, **fields: Any) -> None:
        """One request; written within FLUSH_INTERVAL."""
        if self._threshold > LEVELS["info"]:
            return
        self._pending.append(self._line({"level": "info", "event": "request", **fields}))
        if self._flusher is None:
            try:
                loop = asyncio.get_running_loop()
            except RuntimeError:
                self.flush()
                return
            self._flusher = loop.call_later(FLUSH_INTERVAL, self.flush)

    def raw(self, line: bytes) -> None:
        """A line made elsewhere (the audit log's), written and flushed at once."""
        self._pending.append(line)
        self.flush()

    def flush(self) -> None:
        if self._flusher is not None:
            self._flusher.cancel()
            self._flusher = None
        if self._pending:
            data = b"".join(self._pending)
            self._pending.clear()
            try:
                self._stream.write(data)
                self._stream.flush()
            except (OSError, ValueError):
                pass  # stdout closed or broken: logging must never take the proxy down

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

"""Log lines go into a bounded buffer; a thread of its own writes them out.

So a slow or stuck reader of stdout (a busy log driver, a full pipe) never blocks the
event loop: the loop only appends to a list. When the buffer is full, lines are dropped
and counted (`on_drop`, which the metrics turn into `fender_log_lines_dropped_total`):
losing log lines is better than a proxy that stops answering. Lines keep their order,
whatever their kind. Access lines are written within FLUSH_INTERVAL, in one write for
all that came meanwhile; an urgent line (an event) wakes the writer at once. The thread
ends when it has been idle for a while, and starts again with the next line.
"""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Callable

FLUSH_INTERVAL = 0.25  # seconds: how long access lines may wait to share a write
IDLE_ROUNDS = 8  # intervals without a line before the thread ends
FLUSH_WAIT = 2.0  # seconds flush() waits at most (a stuck stdout must not hang a shutdown)

Write = Callable[[bytes], None]
DropReporter = Callable[[int], None]  # how many lines were just dropped


def fd_writer(fd: int) -> Write:
    """Write all of `data` to a file descriptor, unbuffered (no lock for a stuck write
    to hold at interpreter exit)."""

    def write(data: bytes) -> None:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]

    return write


class LineWriter:
    def __init__(self, write: Write, max_bytes: int, on_drop: DropReporter | None = None):
        self.write = write
        self.max_bytes = max_bytes
        self.on_drop = on_drop
        self.dropped = 0
        self._lines: list[bytes] = []
        self._bytes = 0  # in _lines
        self._accepted = 0  # lines ever put in _lines
        self._written = 0  # lines ever taken out and written (or given up on)
        self._urgent = False
        self._cond = threading.Condition()
        self._thread: threading.Thread | None = None

    def put(self, line: bytes, *, urgent: bool = False) -> None:
        # No lock for the common line: appending to a list is atomic, and the writer
        # takes the whole list at once. (The byte count may miss a line the writer took
        # meanwhile: the bound is a safety net, not an exact figure.)
        size = len(line)
        if self._bytes + size > self.max_bytes:
            self.dropped += 1
            if self.on_drop is not None:
                self.on_drop(1)
            return
        self._lines.append(line)
        self._bytes += size
        self._accepted += 1
        if urgent or self._thread is None:
            with self._cond:
                if self._thread is None:
                    self._start()
                if urgent:
                    self._urgent = True
                    self._cond.notify()

    def flush(self, timeout: float = FLUSH_WAIT) -> bool:
        """Wait until every line put so far is written, or `timeout`; True if it was."""
        with self._cond:
            target = self._accepted
            if self._written >= target:
                return True
            self._urgent = True
            self._cond.notify_all()
            return self._cond.wait_for(lambda: self._written >= target, timeout)

    def _start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="fender-log", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        idle = 0
        while True:
            with self._cond:
                self._cond.wait_for(lambda: self._urgent, FLUSH_INTERVAL)
                batch, self._lines = self._lines, []
                self._bytes, self._urgent = 0, False
                if not batch:
                    idle += 1
                    if idle >= IDLE_ROUNDS:
                        self._thread = None
                        return
                    continue
            idle = 0
            # stdout closed or broken: logging must never take the proxy down.
            with contextlib.suppress(OSError, ValueError):
                self.write(b"".join(batch))
            with self._cond:
                self._written += len(batch)
                self._cond.notify_all()

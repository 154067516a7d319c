"""Group commit: one thread owns the SQLite connection and runs every operation that
arrived together in one transaction, with one fsync'd commit.

The event loop never waits on the disk: it hands operations over and awaits futures
that the thread resolves through `call_soon_threadsafe`, once per batch. While one
commit is being fsync'd, the next operations queue up, so under load a commit carries
many accepts (a commit costs one fsync whether it holds one row or a hundred).

Each batch: writes (`write` ops) in one `BEGIN IMMEDIATE ... COMMIT`, each in a savepoint
so that one op's bug does not undo the others; a failure of the transaction itself (a
full disk, an I/O error) fails every write of the batch with `QueueUnavailable`. The
writes are answered first; then the reads (`read` ops) of the batch run, outside the
transaction. `then` callbacks run on the loop, before the futures are resolved, whether
or not anyone still awaits them (an accept whose app left is still indexed).
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from .store import QueueUnavailable

Work = Callable[[sqlite3.Connection], Any]
WRITE, READ = 0, 1


@dataclass(slots=True)
class Op:
    kind: int
    work: Work
    future: asyncio.Future[Any]
    then: Callable[[Any], Any] | None = None  # on the loop, with the result
    result: Any = None
    error: BaseException | None = field(default=None)


class Worker:
    def __init__(self, name: str) -> None:
        self._name = name
        self._ops: list[Op] = []
        self._wake = threading.Condition()
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._closing = False
        self.conn: sqlite3.Connection | None = None  # the thread's; set by an `open` op
        self.commits = 0  # transactions committed (tests and the benchmark read it)

    def submit(
        self, kind: int, work: Work, then: Callable[[Any], Any] | None = None
    ) -> asyncio.Future[Any]:
        loop = asyncio.get_running_loop()
        if self._thread is None:
            self._loop = loop
            self._thread = threading.Thread(target=self._run, name=self._name, daemon=True)
            self._thread.start()
        future: asyncio.Future[Any] = loop.create_future()
        with self._wake:
            if self._closing:
                raise QueueUnavailable("the store is closed")
            self._ops.append(Op(kind, work, future, then))
            self._wake.notify()
        return future

    async def close(self, finish: Work) -> None:
        """Run what is queued, then `finish(conn)` (may be given None), then stop."""
        thread = self._thread
        if thread is None:
            return
        done = asyncio.get_running_loop().create_future()
        with self._wake:
            self._ops.append(Op(READ, finish, done))
            self._closing = True
            self._wake.notify()
        await asyncio.shield(done)
        await asyncio.get_running_loop().run_in_executor(None, thread.join, 5.0)

    def _run(self) -> None:
        while True:
            with self._wake:
                while not self._ops and not self._closing:
                    self._wake.wait()
                if not self._ops:
                    return
                batch, self._ops = self._ops, []
            writes = [op for op in batch if op.kind == WRITE]
            reads = [op for op in batch if op.kind == READ]
            if writes:
                self._transaction(writes)
                self._hand_back(writes)
            for op in reads:
                try:
                    op.result = op.work(self.conn)  # type: ignore[arg-type]
                except Exception as exc:
                    op.error = _unavailable(exc)
            if reads:
                self._hand_back(reads)

    def _transaction(self, writes: list[Op]) -> None:
        conn = self.conn
        if conn is None:
            for op in writes:
                op.error = QueueUnavailable("the store is not open")
            return
        try:
            conn.execute("BEGIN IMMEDIATE")
            for op in writes:
                conn.execute("SAVEPOINT op")
                try:
                    op.result = op.work(conn)
                except sqlite3.Error:
                    raise  # the transaction's trouble: below
                except Exception as exc:  # the op's own: undo it alone
                    conn.execute("ROLLBACK TO op")
                    op.error = exc
                conn.execute("RELEASE op")
            conn.execute("COMMIT")
            self.commits += 1
        except sqlite3.Error as exc:
            # No transaction left to roll back, or the connection is gone: nothing to undo.
            with contextlib.suppress(sqlite3.Error):
                conn.execute("ROLLBACK")
            error = _unavailable(exc)
            for op in writes:
                op.result, op.error = None, error

    def _hand_back(self, ops: list[Op]) -> None:
        loop = self._loop
        if loop is not None and not loop.is_closed():
            with contextlib.suppress(RuntimeError):  # the loop closed: nobody left to tell
                loop.call_soon_threadsafe(_resolve, ops)


def _unavailable(exc: BaseException) -> BaseException:
    if isinstance(exc, sqlite3.Error):
        return QueueUnavailable(f"sqlite: {exc}")
    return exc


def _resolve(ops: list[Op]) -> None:
    for op in ops:
        result, error = op.result, op.error
        if error is None and op.then is not None:
            try:
                result = op.then(result)
            except Exception as exc:
                error = exc
        future = op.future
        if future.done():
            continue
        if error is not None:
            future.set_exception(error)
        else:
            future.set_result(result)

"""Group commit: one thread owns the SQLite connection and runs every operation that
arrived together in one transaction, with one fsync'd commit.

The event loop never waits on the disk: it hands operations over and awaits futures
that the thread resolves through `call_soon_threadsafe`, once per batch. While one
commit is being fsync'd, the next operations queue up, so under load a commit carries
many accepts (a commit costs one fsync whether it holds one row or a hundred).

Each batch: its writes in one `BEGIN IMMEDIATE ... COMMIT`; the accepts among them as
one multi-row INSERT (sqlite_sql.accept_many), the settlements as one UPDATE per kind
(settle_many). A batch that holds only settlements commits with `synchronous=NORMAL`:
no fsync (a settlement lost to a power cut only means the message is delivered again,
which at least once allows; a crash of the process loses nothing either way); any other
batch is fsync'd (`FULL`), and its fsync covers the WAL before it. Few statements matter more
than it seems: each one lets go of the GIL and must win it back from the event loop,
which under load can take a switch interval. A failure of the transaction (a full disk,
an I/O error) fails every write of the batch with `QueueUnavailable`, and so does any
other error of one of them (the transaction is undone whole). The writes are answered
first; then the reads (`read` ops) of the batch run, outside the transaction. `then`
callbacks run on the loop, before the futures are resolved, whether or not anyone still
awaits them (an accept whose app left is still indexed).
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
WRITE, READ, ACCEPT, SETTLE = 0, 1, 2, 3


@dataclass(slots=True)
class Op:
    kind: int
    work: Work
    future: asyncio.Future[Any]
    then: Callable[[Any], Any] | None = None  # on the loop, with the result
    args: Any = None  # an ACCEPT's or SETTLE's: what accept_many() or settle_many() takes
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
        self._kicked = False  # a wake-up of the thread is due at the end of this loop turn
        self.conn: sqlite3.Connection | None = None  # the thread's; set by an `open` op
        self.commits = 0  # transactions committed (tests and the benchmark read it)
        # The accepts of a batch, all at once: a result or an exception for each.
        self.accept_many: Callable[[sqlite3.Connection, list[Any]], list[Any]] = _not_set
        self.settle_many: Callable[[sqlite3.Connection, list[Any]], None] = _not_set
        self._durable: bool | None = None  # the connection's synchronous: FULL or NORMAL

    def submit(
        self,
        kind: int,
        work: Work,
        then: Callable[[Any], Any] | None = None,
        args: Any = None,
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
            self._ops.append(Op(kind, work, future, then, args))
        if not self._kicked:  # what this loop turn submits goes in one batch
            self._kicked = True
            loop.call_soon(self._kick)
        return future

    def _kick(self) -> None:
        self._kicked = False
        with self._wake:
            self._wake.notify()

    async def close(self, finish: Work) -> None:
        """Run what is queued, then `finish(conn)` (may be given None), then stop."""
        thread = self._thread
        if thread is None or self._closing:
            self._closing = True
            return
        done = asyncio.get_running_loop().create_future()
        with self._wake:
            self._ops.append(Op(READ, finish, done))
            self._closing = True
            self._wake.notify()
        await asyncio.shield(done)
        await asyncio.get_running_loop().run_in_executor(None, thread.join, 5.0)
        self._thread = None

    def _run(self) -> None:
        while True:
            with self._wake:
                while not self._ops and not self._closing:
                    self._wake.wait()
                if not self._ops:
                    return
                batch, self._ops = self._ops, []
            writes = [op for op in batch if op.kind != READ]
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
            durable = any(op.kind != SETTLE for op in writes)
            if durable != self._durable:
                conn.execute("PRAGMA synchronous=FULL" if durable else "PRAGMA synchronous=NORMAL")
                self._durable = durable
            conn.execute("BEGIN IMMEDIATE")
            accepts = [op for op in writes if op.kind == ACCEPT]
            if accepts:
                for op, result in zip(
                    accepts, self.accept_many(conn, [op.args for op in accepts]), strict=True
                ):
                    if isinstance(result, Exception):
                        op.error = result
                    else:
                        op.result = result
            settles = [op.args for op in writes if op.kind == SETTLE]
            if settles:
                self.settle_many(conn, settles)
            for op in writes:
                if op.kind == WRITE:
                    op.result = op.work(conn)
            conn.execute("COMMIT")
            self.commits += 1
        except Exception as exc:
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


def _not_set(conn: sqlite3.Connection, args: list[Any]) -> Any:
    raise NotImplementedError


def _unavailable(exc: BaseException) -> BaseException:
    if isinstance(exc, QueueUnavailable):
        return exc
    if isinstance(exc, sqlite3.Error):
        return QueueUnavailable(f"sqlite: {exc}")
    return QueueUnavailable(f"internal error: {type(exc).__name__}")


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


class Checkpointer:
    """Copies the WAL back into the database file from a thread and a connection of its
    own, once a second. A PASSIVE checkpoint lets the writer go on meanwhile, so a commit
    never waits for one (the writer's own automatic checkpoint is pushed far out: it is
    only the safety net). The WAL starts over at the first commit after a full copy."""

    def __init__(self, path: str, every: float = 1.0) -> None:
        self._path = path
        self._every = every
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="fender-wal", daemon=True)
            self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5.0)
            self._thread = None

    def _run(self) -> None:
        try:
            conn = sqlite3.connect(self._path, isolation_level=None, check_same_thread=False)
        except sqlite3.Error:
            return  # the writer's own checkpoints remain
        try:
            conn.execute("PRAGMA busy_timeout=1000")
            while not self._stop.wait(self._every):
                with contextlib.suppress(sqlite3.Error):
                    conn.execute("PRAGMA wal_checkpoint(PASSIVE)")
        finally:
            conn.close()

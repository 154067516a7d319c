"""The embedded store: one SQLite file (WAL, `synchronous=FULL`), written by group commit.

The file is one process's: an exclusive lock on `PATH.lock` is held while it is open (a
second Fender on the same file answers `queue_unavailable` until the first has gone; a
fleet shares a queue through Redis). Being the only writer, the store keeps the waiting
messages' order in memory (fair.py; bodies stay on disk until taken), loaded at open,
so that taking work needs no scan. A message is pending until a delivery settles it;
nothing about a delivery in progress is written, so after a crash every message that
was not settled is simply due again (at least once), with its attempts so far.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import os
import sqlite3
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson

from ..state.clock import Clock
from . import sqlite_sql as sql
from .fair import FairQueue
from .message import (
    DONE,
    FAIL,
    RELEASE,
    Message,
    NewMessage,
    QueueStats,
    Settlement,
    add_attempt,
)
from .sqlite_worker import ACCEPT, READ, SETTLE, WRITE, Checkpointer, Worker
from .store import QueueUnavailable

ACCEPT_TIMEOUT = 5.0  # a disk that takes longer than this to commit: 503, not a hung app


class SqliteStore:
    kind = "sqlite"
    poll: float | None = None  # the only writer: it knows when work comes

    def __init__(self, path: Path, clock: Clock) -> None:
        self.path = path
        self.clock = clock
        self.worker = Worker(f"fender-sqlite:{path.name}")
        self.worker.accept_many = sql.accept_many
        self.worker.settle_many = sql.settle_many
        self.checkpointer = Checkpointer(str(path))
        self._ready = False
        self.why = "not opened yet"
        self._lock: int | None = None
        self._queues: dict[str, FairQueue] = {}
        self._dead: Counter[str] = Counter()
        self._paused: set[str] = set()
        self._reserved: Counter[str] = Counter()
        self._next_seq = 1
        self._callbacks: list[Callable[[str], None]] = []
        self._opening: asyncio.Future[Any] | None = None

    @property
    def ready(self) -> bool:
        return self._ready

    def on_work(self, callback: Callable[[str], None]) -> None:
        self._callbacks.append(callback)

    def _notify(self, queue: str) -> None:
        for callback in self._callbacks:
            callback(queue)

    def _index(self, queue: str) -> FairQueue:
        index = self._queues.get(queue)
        if index is None:
            index = self._queues[queue] = FairQueue()
        return index

    # Opening and closing.
    async def open(self) -> None:
        if self._ready:
            return
        if self._opening is None:
            self._opening = self.worker.submit(READ, self._open_db)
        try:
            loaded = await asyncio.shield(self._opening)
        except QueueUnavailable as exc:
            self.why = str(exc)
            raise
        finally:
            self._opening = None
        if self._ready:
            return
        now = self.clock.wall()
        for seq, queue, key, due, since in loaded["pending"]:
            self._index(queue).add(seq, key, due, since, now)
        self._dead = Counter(dict(loaded["dead"]))
        self._paused = set(loaded["paused"])
        self._next_seq = loaded["next_seq"]
        self.checkpointer.start()
        self._ready = True
        for queue in self._queues:
            self._notify(queue)

    def _open_db(self, _: object) -> dict[str, Any]:
        """In the worker thread: the file, its lock, its schema, what waits in it."""
        worker = self.worker
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            if self._lock is None:
                self._lock = _lock(self.path)
            if worker.conn is None:
                worker.conn = _connect(self.path)
            conn = worker.conn
            return {
                "pending": conn.execute(sql.WAITING_ROWS).fetchall(),
                "dead": conn.execute(sql.DEAD_COUNTS).fetchall(),
                "paused": [row[0] for row in conn.execute(sql.PAUSED)],
                "next_seq": (conn.execute(sql.MAX_SEQ).fetchone()[0] or 0) + 1,
            }
        except (OSError, sqlite3.Error) as exc:
            _close_conn(worker)
            raise QueueUnavailable(_why(exc)) from None

    async def close(self) -> None:
        self._ready = False
        self.why = "closed"

        def finish(_: object) -> None:
            self.checkpointer.stop()
            _close_conn(self.worker)  # the last connection out copies the WAL back
            if self._lock is not None:
                os.close(self._lock)  # the flock goes with it
                self._lock = None

        await self.worker.close(finish)

    def _check(self) -> None:
        if not self._ready:
            raise QueueUnavailable(self.why)

    # The acceptor's side.
    async def accept(
        self, queue: str, message: NewMessage, *, max_messages: int, dedup_since: float
    ) -> tuple[str, bool]:
        self._check()
        index = self._index(queue)
        full = len(index) + self._reserved[queue] >= max_messages
        seq = self._next_seq
        self._next_seq += 1

        def then(result: tuple[str, bool]) -> tuple[str, bool]:
            if result[1]:
                return result
            if future.done():  # committed after the app was answered 503: taken back
                work = lambda conn: conn.execute(sql.ABANDON, (seq,))  # noqa: E731
                self.worker.submit(WRITE, work).add_done_callback(_quiet)  # else: delivered
                return result
            index.add(seq, message.key, message.accepted, message.accepted, message.accepted)
            self._notify(queue)
            return result

        if not full:
            self._reserved[queue] += 1
        args: sql.Accept = (queue, message, dedup_since, full, seq)
        future = self.worker.submit(ACCEPT, _nothing, then, args)
        timer = asyncio.get_running_loop().call_later(ACCEPT_TIMEOUT, _time_out, future)
        try:
            result: tuple[str, bool] = await future
            return result
        finally:
            timer.cancel()
            if not full:
                self._reserved[queue] -= 1

    # The deliverer's side.
    async def take(self, queue: str, limit: int, now: float, hold_for: float) -> list[Message]:
        self._check()
        index = self._queues.get(queue)
        seqs = index.take(now, limit) if index is not None else []
        if not seqs or index is None:
            return []
        try:
            rows = await self.worker.submit(READ, lambda conn: sql.load(conn, seqs))
        except BaseException as exc:  # unavailable, or cancelled (stopping): they wait again
            later = now + 1.0 if isinstance(exc, QueueUnavailable) else now
            for seq in seqs:
                index.back(seq, later, now)
            raise
        found = {row[0] for row in rows}
        for seq in seqs:
            if seq not in found:
                index.done(seq)  # gone meanwhile
        return [sql.message(row) for row in rows]

    def next_due(self, queue: str) -> float | None:
        index = self._queues.get(queue)
        return index.next_due() if index is not None else None

    def has_ready(self, queue: str) -> bool:
        index = self._queues.get(queue)
        return index is not None and index.ready

    async def settle(self, queue: str, message: Message, settlement: Settlement) -> None:
        index, seq, now = self._index(queue), message.handle, self.clock.wall()
        kind = settlement.kind
        if kind == RELEASE and settlement.attempt is None:
            index.back(seq, settlement.due, now)  # nothing changed on disk
            self._notify(queue)
            return
        history = orjson.dumps(add_attempt(message.history, settlement.attempt)).decode()
        attempts = message.attempts + (settlement.attempt is not None)
        word = "delivered" if kind == DONE else "dead" if kind == FAIL else "retry"
        when = settlement.due if word == "retry" else now
        args: sql.Settle = (word, seq, attempts, history, when, settlement.reason)

        def then(_: None) -> None:
            if kind in (DONE, FAIL):
                index.done(seq)
                self._dead[queue] += kind == FAIL
            else:
                index.back(seq, settlement.due, self.clock.wall())
                self._notify(queue)

        try:
            await self.worker.submit(SETTLE, _nothing, then, args)
        except QueueUnavailable:
            index.back(seq, now + 5.0, now)  # not settled on disk: it goes again
            raise

    async def stats(self, queue: str, now: float) -> QueueStats:
        return self.snapshot(queue, now)

    def snapshot(self, queue: str, now: float) -> QueueStats:
        index = self._queues.get(queue)
        oldest = index.oldest() if index is not None else None
        return QueueStats(
            depth=len(index) if index is not None else 0,
            oldest_s=max(0.0, now - oldest) if oldest is not None else 0.0,
            dead=self._dead[queue],
            in_flight=index.in_flight if index is not None else 0,
            paused=queue in self._paused,
        )

    # The operator's side.
    async def view(self, queue: str, message_id: str) -> dict[str, Any] | None:
        self._check()
        found: dict[str, Any] | None = await self.worker.submit(
            READ, lambda conn: sql.view(conn, queue, message_id)
        )
        return found

    async def dead(self, queue: str, limit: int) -> list[dict[str, Any]]:
        self._check()
        found: list[dict[str, Any]] = await self.worker.submit(
            READ, lambda conn: sql.dead(conn, queue, limit)
        )
        return found

    async def redrive(self, queue: str, message_id: str | None, now: float) -> int:
        self._check()
        index = self._index(queue)

        def then(rows: list[tuple[int, str]]) -> int:
            for seq, key in rows:
                index.add(seq, key, now, now, now)
            self._dead[queue] -= len(rows)
            if rows:
                self._notify(queue)
            return len(rows)

        work = lambda conn: sql.redrive(conn, queue, message_id, now)  # noqa: E731
        count: int = await self.worker.submit(WRITE, work, then)
        return count

    async def delete(self, queue: str, message_id: str) -> bool:
        self._check()

        def then(deleted: int) -> bool:
            self._dead[queue] -= deleted
            return deleted > 0

        work = lambda conn: conn.execute(sql.DELETE, (queue, message_id)).rowcount  # noqa: E731
        deleted: bool = await self.worker.submit(WRITE, work, then)
        return deleted

    async def set_paused(self, queue: str, paused: bool) -> None:
        self._check()
        statement = sql.PAUSE if paused else sql.RESUME

        def then(_: object) -> None:
            if paused:
                self._paused.add(queue)
            else:
                self._paused.discard(queue)
                self._notify(queue)

        await self.worker.submit(WRITE, lambda conn: conn.execute(statement, (queue,)), then)

    async def purge(self, queue: str, before: float) -> None:
        self._check()
        while True:  # in chunks: accepts in between never wait for a long delete
            work = lambda conn: conn.execute(sql.PURGE, (queue, before)).rowcount  # noqa: E731
            if await self.worker.submit(WRITE, work) < 2000:
                return


def _nothing(conn: sqlite3.Connection) -> None:
    return None


def _quiet(future: asyncio.Future[Any]) -> None:
    if not future.cancelled():
        future.exception()  # retrieved; a take-back that fails leaves it to be delivered


def _time_out(future: asyncio.Future[Any]) -> None:
    if not future.done():
        future.set_exception(QueueUnavailable("the disk took too long to commit"))


def _lock(path: Path) -> int:
    fd = os.open(f"{path}.lock", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise QueueUnavailable(f"{path} is in use by another process") from None
    return fd


def _connect(path: Path) -> sqlite3.Connection:
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    try:
        mode = conn.execute("PRAGMA journal_mode=WAL").fetchone()[0]
        if str(mode).lower() != "wal":
            raise sqlite3.OperationalError(f"journal_mode is {mode}, not wal")
        conn.execute("PRAGMA synchronous=FULL")  # the WAL is fsync'd at every commit
        conn.execute("PRAGMA busy_timeout=5000")
        conn.execute("PRAGMA wal_autocheckpoint=100000")  # the Checkpointer's job
        conn.execute("PRAGMA journal_size_limit=67108864")  # a WAL that grew shrinks back
        conn.executescript(sql.SCHEMA)
    except BaseException:
        conn.close()
        raise
    return conn


def _close_conn(worker: Worker) -> None:
    if worker.conn is not None:
        with contextlib.suppress(sqlite3.Error):
            worker.conn.close()
        worker.conn = None


def _why(exc: BaseException) -> str:
    if isinstance(exc, QueueUnavailable):
        return str(exc)
    if isinstance(exc, OSError):
        return f"{exc.strerror or exc} ({exc.filename or ''})"
    return f"sqlite: {exc}"

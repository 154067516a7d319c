"""The SQLite store on a real file: group commit, dedup, limits, restart, dead letters."""

from __future__ import annotations

import asyncio
import sqlite3
import threading
from pathlib import Path

import pytest

from proxy.delivery import sqlite_store
from proxy.delivery.message import (
    DONE,
    FAIL,
    RELEASE,
    RETRY,
    NewMessage,
    Settlement,
    attempt_record,
    new_id,
)
from proxy.delivery.sqlite_store import SqliteStore
from proxy.delivery.store import QueueFull, QueueUnavailable
from tests.support.clock import FakeClock

HEADERS = b"content-type: application/json\r\nx-tenant-id: acme\r\nidempotency-key: k"


def message(clock: FakeClock, n: int, key: str = "", idem: str | None = None) -> NewMessage:
    now = clock.wall()
    return NewMessage(new_id(now), "send", "POST", "/v1/send", HEADERS, b"body %d" % n, "rid",
                      key, idem, now)  # fmt: skip


@pytest.fixture
async def opened(tmp_path: Path):
    clock = FakeClock()
    store = SqliteStore(tmp_path / "q.db", clock)
    await store.open()
    yield store, clock
    await store.close()


async def accept(store: SqliteStore, clock: FakeClock, n: int, **kw) -> tuple[str, bool]:
    return await store.accept("q", message(clock, n, **kw), max_messages=1000, dedup_since=0.0)


async def test_accepts_arriving_together_share_one_commit(opened) -> None:
    store, clock = opened
    before = store.worker.commits
    results = await asyncio.gather(*(accept(store, clock, n) for n in range(200)))
    assert len({mid for mid, _ in results}) == 200 and not any(dup for _, dup in results)
    assert store.worker.commits - before <= 20  # group commit: ten rows or more a fsync
    assert (await store.stats("q", clock.wall())).depth == 200


async def test_an_idempotency_key_answers_the_first_id_and_keeps_nothing_new(opened) -> None:
    store, clock = opened
    first, _ = await accept(store, clock, 1, idem="order-7", key="acme")
    together = await asyncio.gather(
        *(accept(store, clock, 2, idem="order-7", key="acme") for _ in range(3))
    )
    assert together == [(first, True)] * 3
    other_tenant, duplicate = await accept(store, clock, 3, idem="order-7", key="globex")
    assert other_tenant != first and not duplicate  # one tenant's key never hides another's
    assert (await store.stats("q", clock.wall())).depth == 2
    late = await store.accept(
        "q", message(clock, 4, key="acme", idem="order-7"), max_messages=1000,
        dedup_since=clock.wall() + 1,
    )  # fmt: skip
    assert late[1] is False  # past max_age: a new message


async def test_a_full_queue_refuses_but_a_duplicate_still_gets_its_id(opened) -> None:
    store, clock = opened
    first, _ = await store.accept("q", message(clock, 1, idem="a"), max_messages=2, dedup_since=0.0)
    await store.accept("q", message(clock, 2), max_messages=2, dedup_since=0.0)
    with pytest.raises(QueueFull):
        await store.accept("q", message(clock, 3), max_messages=2, dedup_since=0.0)
    again = await store.accept("q", message(clock, 4, idem="a"), max_messages=2, dedup_since=0.0)
    assert again == (first, True)


async def test_a_second_process_on_the_same_file_is_refused_while_the_first_holds_it(
    opened, tmp_path
) -> None:
    _, clock = opened
    other = SqliteStore(tmp_path / "q.db", clock)
    with pytest.raises(QueueUnavailable, match="in use by another process"):
        await other.open()
    with pytest.raises(QueueUnavailable):
        await other.accept("q", message(clock, 1), max_messages=10, dedup_since=0.0)
    await other.close()


async def test_after_a_restart_what_waited_waits_again_with_its_attempts(tmp_path) -> None:
    clock = FakeClock()
    store = SqliteStore(tmp_path / "q.db", clock)
    await store.open()
    for n in range(4):
        await accept(store, clock, n)
    taken = await store.take("q", 4, clock.wall(), 60)
    record = attempt_record(clock.wall(), 503, "upstream_status", 12.0)
    await store.settle("q", taken[0], Settlement(DONE, record))
    await store.settle("q", taken[1], Settlement(RETRY, record, due=clock.wall() + 30))
    await store.settle("q", taken[2], Settlement(FAIL, record, reason="rejected"))
    # taken[3] is still being delivered when the process goes: nothing was written of it.
    await store.close()
    again = SqliteStore(tmp_path / "q.db", clock)
    await again.open()
    stats = await again.stats("q", clock.wall())
    assert (stats.depth, stats.dead) == (2, 1)
    (due_now,) = await again.take("q", 10, clock.wall(), 60)
    assert due_now.id == taken[3].id and due_now.attempts == 0
    assert again.next_due("q") == pytest.approx(clock.wall() + 30)
    (later,) = await again.take("q", 10, clock.wall() + 30, 60)
    assert later.id == taken[1].id and later.attempts == 1 and later.history == [record]
    await again.close()


async def test_a_release_spends_no_attempt_and_writes_nothing(opened) -> None:
    store, clock = opened
    await accept(store, clock, 1)
    (taken,) = await store.take("q", 1, clock.wall(), 60)
    commits = store.worker.commits
    await store.settle("q", taken, Settlement(RELEASE, due=clock.wall()))
    assert store.worker.commits == commits
    (again,) = await store.take("q", 1, clock.wall(), 60)
    assert again.id == taken.id and again.attempts == 0


async def test_dead_letters_are_listed_retried_and_deleted(opened) -> None:
    store, clock = opened
    ids = [(await accept(store, clock, n))[0] for n in range(3)]
    for taken in await store.take("q", 3, clock.wall(), 60):
        record = attempt_record(clock.wall(), 422, "", 3.0)
        await store.settle("q", taken, Settlement(FAIL, record, reason="rejected"))
    dead = await store.dead("q", 10)
    assert {d["id"] for d in dead} == set(ids) and all(d["state"] == "dead" for d in dead)
    assert await store.redrive("q", ids[0], clock.wall()) == 1
    assert await store.redrive("q", ids[0], clock.wall()) == 0  # no longer dead
    assert await store.delete("q", ids[1]) is True
    assert await store.view("q", ids[1]) is None
    view = await store.view("q", ids[0])
    assert view is not None and (view["state"], view["attempts"]) == ("pending", 0)
    assert view["last_answer"]["status"] == 422  # its history is kept
    assert (await store.stats("q", clock.wall())).dead == 1
    assert await store.redrive("q", None, clock.wall()) == 1


async def test_a_view_never_holds_the_body_or_a_header_value(opened) -> None:
    store, clock = opened
    mid, _ = await accept(store, clock, 1)
    view = await store.view("q", mid)
    assert view is not None
    assert view["header_names"] == ["content-type", "x-tenant-id", "idempotency-key"]
    assert view["body_bytes"] == len(b"body 1")
    text = repr(view)
    assert "body 1" not in text and "acme" not in text and "application/json" not in text


async def test_paused_is_kept_in_the_file(tmp_path) -> None:
    clock = FakeClock()
    store = SqliteStore(tmp_path / "q.db", clock)
    await store.open()
    await store.set_paused("q", True)
    await store.close()
    again = SqliteStore(tmp_path / "q.db", clock)
    await again.open()
    assert (await again.stats("q", clock.wall())).paused
    await again.close()


async def test_the_file_is_wal_and_fsyncs_every_commit(opened, tmp_path) -> None:
    store, clock = opened
    await accept(store, clock, 1)
    conn = sqlite3.connect(tmp_path / "q.db")
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    conn.close()
    synchronous = await store.worker.submit(
        1, lambda c: c.execute("PRAGMA synchronous").fetchone()[0]
    )
    assert synchronous == 2  # FULL


async def test_a_path_that_is_a_directory_cannot_be_opened(tmp_path) -> None:
    (tmp_path / "q.db").mkdir()
    store = SqliteStore(tmp_path / "q.db", FakeClock())
    with pytest.raises(QueueUnavailable):
        await store.open()
    assert not store.ready
    await store.close()


async def test_delivered_messages_are_forgotten_once_their_dedup_window_is_over(opened) -> None:
    store, clock = opened
    mid, _ = await accept(store, clock, 1, idem="once")
    (taken,) = await store.take("q", 1, clock.wall(), 60)
    await store.settle("q", taken, Settlement(DONE, attempt_record(clock.wall(), 200, "", 1.0)))
    view = await store.view("q", mid)
    assert view is not None and view["state"] == "delivered" and view["body_bytes"] == 0
    await store.purge("q", clock.wall() - 1)  # settled after that: kept
    assert await store.view("q", mid) is not None
    clock.advance(10)
    await store.purge("q", clock.wall() - 1)
    assert await store.view("q", mid) is None
    again, duplicate = await accept(store, clock, 2, idem="once")
    assert again != mid and not duplicate


async def test_a_take_cancelled_while_it_loads_leaves_its_messages_waiting(opened) -> None:
    store, clock = opened
    await accept(store, clock, 1)
    taking = asyncio.ensure_future(store.take("q", 1, clock.wall(), 60))
    await asyncio.sleep(0)  # it is loading the body now
    taking.cancel()
    await asyncio.gather(taking, return_exceptions=True)
    (again,) = await store.take("q", 1, clock.wall(), 60)
    assert again.body == b"body 1"


async def test_an_accept_answered_503_by_a_slow_disk_keeps_nothing(
    opened, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store, clock = opened
    monkeypatch.setattr(sqlite_store, "ACCEPT_TIMEOUT", 0.05)
    real, gate = store.worker.accept_many, threading.Event()

    def slow_disk(conn: sqlite3.Connection, accepts: list) -> list:
        assert gate.wait(10)  # the commit comes after the app was answered
        return real(conn, accepts)

    store.worker.accept_many = slow_disk
    with pytest.raises(QueueUnavailable):
        await accept(store, clock, 1)
    store.worker.accept_many = real
    gate.set()
    kept, _ = await accept(store, clock, 2)
    await store.close()
    reopened = SqliteStore(tmp_path / "q.db", clock)
    await reopened.open()
    try:  # after a restart too, only what got its 202 waits
        assert (await reopened.stats("q", clock.wall())).depth == 1
        (taken,) = await reopened.take("q", 10, clock.wall(), 60.0)
        assert (taken.id, taken.body) == (kept, b"body 2")
    finally:
        await reopened.close()


async def test_a_deleted_dead_letter_takes_its_idempotency_key_with_it(opened) -> None:
    store, clock = opened
    first, _ = await accept(store, clock, 1, idem="order-7")
    (taken,) = await store.take("q", 1, clock.wall(), 60)
    record = attempt_record(clock.wall(), 422, "", 3.0)
    await store.settle("q", taken, Settlement(FAIL, record, reason="rejected"))
    assert await accept(store, clock, 2, idem="order-7") == (first, True)
    assert await store.delete("q", first) is True
    again, duplicate = await accept(store, clock, 3, idem="order-7")
    assert again != first and not duplicate

"""The SQLite store's schema and statements, and its rows made into messages and views.

One table for every queue of the file. A delivered message keeps its row (without body
and headers) until `max_age` after its acceptance, so that its id can be looked up and
its idempotency key still deduplicates; a dead letter keeps everything, to be retried.
"""

from __future__ import annotations

import sqlite3
from typing import Any

import orjson

from .message import PENDING, Message, NewMessage, header_names, public_view
from .store import QueueFull

SCHEMA = """
CREATE TABLE IF NOT EXISTS messages (
    seq INTEGER PRIMARY KEY,        -- the order of acceptance
    id TEXT NOT NULL UNIQUE,
    queue TEXT NOT NULL,
    route TEXT NOT NULL,
    state TEXT NOT NULL,            -- pending, delivered, dead
    fair_key TEXT NOT NULL,
    idem TEXT,                      -- the app's idempotency key
    method TEXT NOT NULL,
    target TEXT NOT NULL,
    headers BLOB,
    body BLOB,
    request_id TEXT NOT NULL,
    accepted REAL NOT NULL,
    since REAL NOT NULL,            -- max_age counts from here (a retry by hand resets it)
    due REAL NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    history TEXT NOT NULL DEFAULT '[]',
    settled REAL,
    reason TEXT
);
CREATE INDEX IF NOT EXISTS messages_state ON messages (queue, state, settled);
CREATE INDEX IF NOT EXISTS messages_idem ON messages (idem) WHERE idem IS NOT NULL;
CREATE TABLE IF NOT EXISTS paused (queue TEXT PRIMARY KEY);
"""

WAITING_ROWS = "SELECT seq, queue, fair_key, due, since FROM messages WHERE state = 'pending'"
DEAD_COUNTS = "SELECT queue, count(*) FROM messages WHERE state = 'dead' GROUP BY queue"
PAUSED = "SELECT queue FROM paused"
MAX_SEQ = "SELECT max(seq) FROM messages"
_FIND_IDEM = "SELECT queue, fair_key, idem, id, accepted FROM messages WHERE idem IN ({})"
_INSERT = (
    "INSERT INTO messages (seq, id, queue, route, fair_key, idem, method, target, "
    "headers, body, request_id, accepted, since, due, state) VALUES {}"
)
_ROW = "(?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 'pending')"
_ROWS_PER_INSERT = 1000  # 14 values a row, within SQLite's 32766 variables
# A batch's settlements of one kind, in one statement: (seq, attempts, history, time,
# reason) rows; the time is when it settled (delivered, dead) or falls due (retry).
_SETTLE = {
    "delivered": "state = 'delivered', attempts = v.column2, history = v.column3, "
    "settled = v.column4, body = NULL, headers = NULL",
    "dead": "state = 'dead', attempts = v.column2, history = v.column3, settled = v.column4, "
    "reason = v.column5",
    "retry": "attempts = v.column2, history = v.column3, due = v.column4",
}
_SETTLE_ONE = {
    kind: f"UPDATE messages SET {text.replace('v.column', ':c')} WHERE seq = :c1"
    for kind, text in _SETTLE.items()
}
FROM_VALUES = sqlite3.sqlite_version_info >= (3, 33)  # UPDATE ... FROM
DELETE = "DELETE FROM messages WHERE queue = ? AND id = ? AND state = 'dead'"
ABANDON = "DELETE FROM messages WHERE seq = ?"  # kept by a commit the app did not wait for
PAUSE = "INSERT OR IGNORE INTO paused (queue) VALUES (?)"
RESUME = "DELETE FROM paused WHERE queue = ?"
# Delivered messages past their dedup window, a bounded number per transaction.
PURGE = (
    "DELETE FROM messages WHERE seq IN (SELECT seq FROM messages WHERE queue = ? "
    "AND state = 'delivered' AND settled < ? LIMIT 2000)"
)

_LOAD = (
    "SELECT seq, id, route, method, target, headers, body, request_id, fair_key, accepted, "
    "since, attempts, history FROM messages WHERE state = 'pending' AND seq IN ({})"
)
_VIEW = (
    "SELECT id, queue, route, state, method, fair_key, accepted, attempts, history, settled, "
    "reason, length(body), headers FROM messages WHERE queue = ? AND {} "
)


def row(seq: int, queue: str, m: NewMessage) -> tuple[Any, ...]:
    return (
        seq,
        m.id,
        queue,
        m.route,
        m.key,
        m.idem,
        m.method,
        m.target,
        m.headers,
        m.body,
        m.request_id,
        m.accepted,
        m.accepted,
        m.accepted,
    )


# What the store gives accept_many(): (queue, message, dedup_since, full, seq).
Accept = tuple[str, NewMessage, float, bool, int]


def accept_many(conn: sqlite3.Connection, accepts: list[Accept]) -> list[Any]:
    """A batch's accepts in one statement or few: per accept, (id, duplicate) or the
    QueueFull it meets. An idempotency key seen since `dedup_since`, earlier or in the
    same batch, answers the id it was first accepted under."""
    keyed = [(q, m) for q, m, _, _, _ in accepts if m.idem is not None]
    earlier: dict[tuple[str, str, str], tuple[str, float]] = {}
    if keyed:
        idems = list({m.idem for _, m in keyed})
        for queue, key, idem, mid, accepted in conn.execute(
            _FIND_IDEM.format(",".join("?" * len(idems))), idems
        ):
            triple = (queue, key, idem)
            if triple not in earlier or earlier[triple][1] < accepted:
                earlier[triple] = (mid, accepted)
    results: list[Any] = []
    rows: list[Any] = []
    for queue, m, since, full, seq in accepts:
        if m.idem is not None:
            triple = (queue, m.key, m.idem)
            found = earlier.get(triple)
            if found is not None and found[1] > since:
                results.append((found[0], True))
                continue
        if full:
            results.append(QueueFull(f"queue {queue} is full"))
            continue
        if m.idem is not None:
            earlier[(queue, m.key, m.idem)] = (m.id, m.accepted)
        rows.extend(row(seq, queue, m))
        results.append((m.id, False))
    width = len(_ROW.split(",")) - 1
    for start in range(0, len(rows), width * _ROWS_PER_INSERT):
        chunk = rows[start : start + width * _ROWS_PER_INSERT]
        conn.execute(_INSERT.format(",".join([_ROW] * (len(chunk) // width))), chunk)
    return results


# What the store gives settle_many(): (kind, seq, attempts, history, time, reason).
Settle = tuple[str, int, int, str, float, str]


def settle_many(conn: sqlite3.Connection, settles: list[Settle]) -> None:
    by_kind: dict[str, list[tuple[Any, ...]]] = {}
    for kind, *fields in settles:
        by_kind.setdefault(kind, []).append(tuple(fields))
    for kind, rows in by_kind.items():
        if not FROM_VALUES:
            params = [{f"c{i}": v for i, v in enumerate(r, start=1)} for r in rows]
            conn.executemany(_SETTLE_ONE[kind], params)
            continue
        for start in range(0, len(rows), 1000):
            chunk = rows[start : start + 1000]
            rows_text = ",".join(["(?, ?, ?, ?, ?)"] * len(chunk))
            statement = (
                f"UPDATE messages SET {_SETTLE[kind]} FROM (VALUES {rows_text}) AS v "
                "WHERE messages.seq = v.column1"
            )
            conn.execute(statement, [value for r in chunk for value in r])


def load(conn: sqlite3.Connection, seqs: list[int]) -> list[tuple[Any, ...]]:
    statement = _LOAD.format(",".join("?" * len(seqs)))
    return conn.execute(statement, seqs).fetchall()


def message(r: tuple[Any, ...]) -> Message:
    seq, mid, route, method, target, headers, body, rid, key, accepted, since, n, history = r
    return Message(
        id=mid,
        handle=seq,
        route=route,
        method=method,
        target=target,
        headers=headers or b"",
        body=body,
        request_id=rid,
        key=key,
        accepted=accepted,
        since=since,
        attempts=n,
        history=orjson.loads(history),
    )


def _view(r: tuple[Any, ...]) -> dict[str, Any]:
    mid, queue, route, state, method, key, accepted, attempts, history, settled, reason = r[:11]
    return public_view(
        {
            "id": mid,
            "queue": queue,
            "route": route,
            "state": state,
            "method": method,
            "key": key,
            "accepted": accepted,
            "attempts": attempts,
            "history": orjson.loads(history),
            "settled": settled,
            "reason": reason,
            "body_bytes": r[11] or 0,
            "header_names": header_names(r[12]),
        }
    )


def view(conn: sqlite3.Connection, queue: str, message_id: str) -> dict[str, Any] | None:
    found = conn.execute(_VIEW.format("id = ?"), (queue, message_id)).fetchone()
    return _view(found) if found is not None else None


def dead(conn: sqlite3.Connection, queue: str, limit: int) -> list[dict[str, Any]]:
    statement = _VIEW.format("state = 'dead' ORDER BY settled DESC, seq DESC LIMIT ?")
    return [_view(r) for r in conn.execute(statement, (queue, limit))]


def redrive(
    conn: sqlite3.Connection, queue: str, message_id: str | None, now: float
) -> list[tuple[int, str]]:
    """Dead letters pending again, with their attempts counted afresh (history kept)."""
    where = "queue = ? AND state = 'dead'" + (" AND id = ?" if message_id else "")
    args: tuple[Any, ...] = (now, now, queue) + ((message_id,) if message_id else ())
    statement = (
        f"UPDATE messages SET state = '{PENDING}', attempts = 0, since = ?, due = ?, "
        f"settled = NULL, reason = NULL WHERE {where} RETURNING seq, fair_key"
    )
    return [(seq, key) for seq, key in conn.execute(statement, args).fetchall()]
